"""FaceNet embeddings: facenet-pytorch ``InceptionResnetV1`` with real weights, as a small library API.

    embedder = load_embedder(settings.embed, settings.model_dir)   # resolves + hashes the weights, fails fast
    vectors = embedder.embed(crops)    # N x 160 x 160 x 3 uint8 RGB -> N x 512 float32, L2-normalised

With ``EmbedSettings.tta="mirror"`` every crop is embedded together with its horizontal mirror (one batch of
2N) and the two embeddings are averaged and re-normalised: the one code path for probes and gallery photos.

The model is built and its weights loaded (``strict=True``) once, lazily, under a lock; every embedding
carries ``model_id`` and ``weights_sha256`` so vectors from different weights are never mixed up.
Preprocessing is the one the weights were trained with: fixed image standardisation ``(x - 127.5) / 128``
on the aligned 160x160 RGB crop.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from rfr.core.settings import EmbedSettings
from rfr.embedding.device import Runtime, apply_runtime, resolve_runtime
from rfr.embedding.protocol import CROP_SIZE, EMBEDDING_DIM, Embedder
from rfr.models import ModelMissingError, facenet_weights_path, sha256_file, verify_model_file
from rfr.models import facenet_model_id as model_id_for

logger = logging.getLogger(__name__)

__all__ = ["CROP_SIZE", "EMBEDDING_DIM", "Embedder", "FacenetEmbedder", "load_embedder"]

TtaMode = Literal["none", "mirror"]

CLASSIFIER_PREFIX = "logits."  # the training head in published state dicts; embeddings never use it


def check_crops(crops: np.ndarray) -> None:
    """Raise ``ValueError`` unless ``crops`` is an N x 160 x 160 x 3 uint8 array."""
    if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[1:] != (CROP_SIZE, CROP_SIZE, 3):
        raise ValueError(
            f"expected N x {CROP_SIZE} x {CROP_SIZE} x 3 uint8 RGB crops, got {crops.shape} {crops.dtype}"
        )


def preprocess(crops: np.ndarray, device: str = "cpu") -> torch.Tensor:
    """uint8 NHWC RGB -> float32 NCHW on ``device`` with facenet's fixed image standardisation ``(x - 127.5) / 128``.

    The uint8 pixels travel to the device (a quarter of the float bytes) and are standardised there.
    """
    check_crops(crops)
    x = torch.from_numpy(np.ascontiguousarray(crops)).to(device).permute(0, 3, 1, 2).float()
    return (x - 127.5) / 128.0


def build_model(state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """An eval-mode ``InceptionResnetV1`` holding exactly ``state_dict`` (classifier head dropped, strict load)."""
    from facenet_pytorch import InceptionResnetV1

    model: nn.Module = InceptionResnetV1(pretrained=None, classify=False)
    weights = {k: v for k, v in state_dict.items() if not k.startswith(CLASSIFIER_PREFIX)}
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise ModelMissingError(
            f"the weights do not fit facenet-pytorch InceptionResnetV1 ({str(exc)[:500]}); "
            "re-run `rfr models fetch --force` or fix RFR_EMBED__WEIGHTS_PATH"
        ) from exc
    return model.eval()


def mirror_fused(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Unit embeddings of a preprocessed N x 3 x H x W batch fused with those of its horizontal mirror: one
    forward pass over 2N, the mean of each pair, re-normalised (float32, N x 512, on ``x``'s device)."""
    both = forward(torch.cat([x, x.flip(3)]))
    n = x.shape[0]
    return torch.nn.functional.normalize(both[:n] + both[n:], p=2, dim=1)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a state dict saved with ``torch.save`` (tensors only: ``weights_only=True``)."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelMissingError(
            f"FaceNet weights at {path} could not be read ({exc}); re-run `rfr models fetch`"
        ) from exc
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ModelMissingError(f"{path} is not a FaceNet state dict; re-run `rfr models fetch`")
    return {str(k): v for k, v in loaded.items()}


class FacenetEmbedder:
    """:class:`Embedder` over facenet-pytorch's ``InceptionResnetV1``; thread-safe, model loaded once on first use."""

    dim: int = EMBEDDING_DIM

    def __init__(self, weights_path: Path, model_id: str, weights_sha256: str, runtime: Runtime,
                 tta: TtaMode = "none") -> None:
        self.weights_path = weights_path
        self.model_id = model_id
        self.weights_sha256 = weights_sha256
        self.runtime = runtime
        self.tta: TtaMode = tta
        self._model: nn.Module | None = None
        self._lock = threading.Lock()

    def load(self) -> FacenetEmbedder:
        """Build the model now (idempotent); the service calls it at start-up to fail fast."""
        with self._lock:
            self._ensure_loaded()
        return self

    def close(self) -> None:
        """Drop the built model (:class:`rfr.models.lifecycle.Model`); the next use builds it again."""
        with self._lock:
            self._model = None

    def _ensure_loaded(self) -> nn.Module:
        if self._model is None:
            started = time.perf_counter()
            apply_runtime(self.runtime)
            model = build_model(read_state_dict(self.weights_path)).to(self.runtime.device)
            if self.runtime.channels_last:
                model = model.to(memory_format=torch.channels_last)
            with torch.inference_mode(), self._autocast():  # first-call kernel set-up, off the first real batch
                model(torch.zeros(1, 3, CROP_SIZE, CROP_SIZE, device=self.runtime.device).contiguous(
                    memory_format=torch.channels_last if self.runtime.channels_last else torch.contiguous_format))
            self._model = model
            logger.info("loaded %s (sha256 %s) from %s in %.1fs: %s", self.model_id, self.weights_sha256[:12],
                        self.weights_path, time.perf_counter() - started, self.runtime.describe())
        return self._model

    def embed(self, crops: np.ndarray) -> npt.NDArray[np.float32]:
        check_crops(crops)
        if len(crops) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        x = preprocess(crops, self.runtime.device)
        vectors = mirror_fused(self.forward, x) if self.tta == "mirror" else self.forward(x)
        result: npt.NDArray[np.float32] = vectors.cpu().numpy()
        return result

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings (float32, unit rows, on the device) of a preprocessed N x 3 x 160 x 160 batch on the device."""
        if self.runtime.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self._lock:
            model = self._ensure_loaded()
            with torch.inference_mode(), self._autocast():
                out: torch.Tensor = model(x)
        vectors = out.float()
        if self.runtime.precision != "fp32":
            # The model normalises in reduced precision; re-normalise in fp32 so every row has unit length.
            vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
        return vectors

    @contextlib.contextmanager
    def _autocast(self) -> Iterator[None]:
        dtype = self.runtime.autocast_dtype
        if dtype is None:
            yield
        else:
            with torch.autocast(self.runtime.device, dtype=dtype):
                yield


_CACHE: dict[tuple[EmbedSettings, Path], FacenetEmbedder] = {}
_CACHE_LOCK = threading.Lock()


def load_embedder(settings: EmbedSettings, model_dir: Path) -> FacenetEmbedder:
    """The embedder for ``settings`` (one per settings and model_dir in a process).

    The weights are located and their sha256 checked against ``<model_dir>/manifest.json`` now
    (``ModelMissingError`` / ``ModelIntegrityError`` name the fix); device and precision are resolved and
    logged now; the model itself is built on first use, or by ``.load()``.
    """
    key = (settings, model_dir)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is None:
            path = facenet_weights_path(model_dir, model=settings.model, explicit=settings.weights_path)
            digest = sha256_file(path) if settings.weights_path else verify_model_file(model_dir, path).sha256
            runtime = resolve_runtime(settings)
            logger.info("embed runtime: %s (%s)", runtime.describe(), runtime.reason)
            cached = _CACHE[key] = FacenetEmbedder(path, model_id_for(settings.model), digest, runtime, settings.tta)
        return cached
