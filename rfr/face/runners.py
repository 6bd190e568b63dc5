"""Ways to run the BlazeFace short-range network (:class:`rfr.face.fast_detector.Runner`) and the detector factory.

- :class:`LiteRTRunner`: the ``.tflite`` file through LiteRT (``ai-edge-litert``, the runtime MediaPipe itself
  wraps) with its XNNPACK CPU kernels, the input resized to each pyramid level's size (the network is fully
  convolutional). One interpreter per input size, kept (a stream of same-sized stills reuses them).
- the PyTorch port (rfr/face/blazeface_torch.py) for CUDA, batched.

:func:`make_detector` builds the detector the settings choose (``RFR_DETECT__DETECTOR``).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from rfr.core.settings import DetectSettings

if TYPE_CHECKING:
    from rfr.face.detector import Detector

logger = logging.getLogger(__name__)

Floats = npt.NDArray[np.float32]

MAX_SIZES = 12
"""Interpreters kept, one per input size (a pyramid of a 1080p frame uses 3; sizes are rounded up to multiples of
32, so nearby frame sizes share them)."""

MAX_CACHED_PIXELS = 4_000_000
"""Input pixels of the kept interpreters, together: each holds ~200 bytes of buffers per input pixel (~800 MB)."""


class LiteRTRunner:
    """:class:`rfr.face.fast_detector.Runner` over LiteRT on the CPU with ``threads`` threads. Calls from several
    threads take turns (one lock); use one runner per worker thread for parallelism.

    Raises:
        FileNotFoundError: at construction, when the model file is missing.
    """

    name = "litert"

    def __init__(self, model_path: Path, threads: int = 1) -> None:
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise FileNotFoundError(f"face detector model not found at {self.model_path}")
        self.threads = threads
        self._interpreters: OrderedDict[tuple[int, int], Any] = OrderedDict()
        self._lock = threading.Lock()  # an interpreter runs one call at a time
        self._interpreter(128, 128)  # a broken model file fails now, not on the first still
        logger.info("loaded face detector %s on LiteRT (%d thread(s))", self.model_path.name, threads)

    def _interpreter(self, height: int, width: int) -> Any:
        key = (height, width)
        found = self._interpreters.get(key)
        if found is not None:
            self._interpreters.move_to_end(key)
            return found
        from ai_edge_litert.interpreter import Interpreter  # type: ignore[import-untyped]

        interpreter = Interpreter(model_path=str(self.model_path), num_threads=self.threads)
        index = interpreter.get_input_details()[0]["index"]
        interpreter.resize_tensor_input(index, [1, height, width, 3])
        interpreter.allocate_tensors()
        self._interpreters[key] = interpreter
        while len(self._interpreters) > 1 and (len(self._interpreters) > MAX_SIZES or sum(
                h * w for h, w in self._interpreters) > MAX_CACHED_PIXELS):
            self._interpreters.popitem(last=False)
        return interpreter

    def run(self, batch: Floats) -> tuple[Floats, Floats]:
        """Regressors (N, A, 16) and logits (N, A) of a batch (N, H, W, 3) float32 in [-1, 1]; one call a frame."""
        regressors, logits = [], []
        with self._lock:
            for image in batch:
                interpreter = self._interpreter(image.shape[0], image.shape[1])
                interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None])
                interpreter.invoke()
                reg_out, cls_out = _outputs(interpreter)
                regressors.append(interpreter.get_tensor(reg_out)[0])
                logits.append(interpreter.get_tensor(cls_out)[0].reshape(-1))
        return np.stack(regressors), np.stack(logits)

    def close(self) -> None:
        self._interpreters.clear()


def _outputs(interpreter: Any) -> tuple[int, int]:
    """Indices of the regressor (…, 16) and classifier (…, 1) outputs, whatever their names."""
    details = interpreter.get_output_details()
    by_width = {int(d["shape"][-1]): int(d["index"]) for d in details}
    return by_width[16], by_width[1]


def make_detector(settings: DetectSettings, model_dir: Path, strategy: str | None = None) -> Detector:
    """The detector ``settings.detector`` names, loaded: "litert" (default; BlazeFace over whole pyramid levels on
    the CPU), "torch" (the same on CUDA when available, batched), or "mediapipe" (the reference: MediaPipe Tasks
    over a tile pyramid).

    Raises:
        rfr.models.ModelMissingError: the BlazeFace model is not provisioned (``rfr models fetch``).
        ValueError: an unknown detector or strategy.
    """
    from rfr.face.detector import MediaPipeDetector
    from rfr.face.fast_detector import BlazeFaceDetector
    from rfr.models import detector_model_path

    model_path = detector_model_path(model_dir)
    if settings.detector == "mediapipe":
        return MediaPipeDetector(model_path, settings, strategy).load()
    if settings.detector == "litert":
        return BlazeFaceDetector(LiteRTRunner(model_path, settings.threads), settings, strategy)
    if settings.detector == "torch":
        from rfr.face.blazeface_torch import TorchRunner

        return BlazeFaceDetector(TorchRunner.from_tflite(model_path, settings.device), settings, strategy)
    raise ValueError(f"unknown detector {settings.detector!r}; expected litert, torch or mediapipe")
