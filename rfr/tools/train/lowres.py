"""``rfr train lowres``: teach FaceNet's last blocks to embed small, soft faces as it embeds sharp ones.

Cross-resolution distillation with an identity-aware term (issue #17). The teacher is the frozen
facenet-pytorch ``InceptionResnetV1`` with the CASIA-WebFace weights; the student is the same network whose
blocks from ``tune_from`` on are fine-tuned (fully, or through low-rank updates of their convolutions when
``lora_rank`` > 0; ``last_linear`` and ``last_bn`` always fully). Each step draws a batch of training photos, makes
a fresh synthetic CCTV crop of each (:func:`rfr.tools.train.data.lowres_sample`: 24-64 px faces, blur, noise,
JPEG, exposure, greyscale; a random mirror), and minimises

* ``distill``: ``1 - cos(student(degraded), teacher(clean))``, the teacher's embedding of the same photo's
  clean crop (same mirror), and
* ``identity``: a multi-positive InfoNCE of the student embedding against the teacher embeddings of every
  training crop (both mirrors): ``-log(sum_same_identity exp(s.t/tau) / sum_all exp(s.t/tau))``.

Distillation alone drifts degraded faces toward an average face (issue #17's probe); the identity term keeps
them apart. The frozen early layers run without gradients each step on the fresh crops (no feature cache: a
cache would fix the degradations). Deterministic: seeded generators, ``torch.use_deterministic_algorithms``,
a fixed thread count. Trains on :func:`rfr.tools.train.split.training_identities` only.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from rfr.embedding.embedder import build_model, preprocess
from rfr.face.detector import Detector, close_detector
from rfr.tools.train.data import FaceSet, Recipe, clean_crop, lowres_sample

logger = logging.getLogger(__name__)

STAGES = ("conv2d_1a", "conv2d_2a", "conv2d_2b", "maxpool_3a", "conv2d_3b", "conv2d_4a", "conv2d_4b", "repeat_1",
          "mixed_6a", "repeat_2", "mixed_7a", "repeat_3", "block8", "avgpool_1a", "dropout", "last_linear", "last_bn")
"""InceptionResnetV1's children in forward order (its ``forward`` flattens before ``last_linear``)."""
HEAD = ("last_linear", "last_bn")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the fine-tune (saved next to the delta; the defaults are the shipped run's)."""

    tune_from: str = "mixed_6a"
    lora_rank: int = 8
    steps: int = 500
    batch: int = 32
    lr: float = 1e-3
    head_lr: float = 1e-4
    distill_weight: float = 1.0
    identity_weight: float = 2.0
    temperature: float = 0.1
    seed: int = 0
    threads: int = 2
    workers: int = 0
    """Processes making the crops (0: in this one); the crops do not depend on it."""
    device: str = "cpu"
    recipe: Recipe = field(default_factory=Recipe)


class LoraConv(nn.Module):
    """``conv(x) + up(down(x))``: a frozen convolution plus a trainable low-rank update (``up`` starts at 0)."""

    def __init__(self, conv: nn.Conv2d, rank: int) -> None:
        super().__init__()
        self.conv = conv
        self.down = nn.Conv2d(conv.in_channels, rank, conv.kernel_size, conv.stride, conv.padding,  # type: ignore[arg-type]
                              bias=False)
        self.up = nn.Conv2d(rank, conv.out_channels, 1, bias=False)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv(x) + self.up(self.down(x))
        return out


def tuned_stages(tune_from: str) -> tuple[str, ...]:
    """The stages trained for ``tune_from`` (it and every stage after it)."""
    if tune_from not in STAGES:
        raise ValueError(f"unknown stage {tune_from!r}; choose from {', '.join(STAGES)}")
    return STAGES[STAGES.index(tune_from):]


def add_lora(module: nn.Module, rank: int) -> list[str]:
    """Wrap every ``nn.Conv2d`` under ``module`` in :class:`LoraConv`; return the wrapped names."""
    wrapped = []
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Conv2d):
            setattr(module, name, LoraConv(child, rank))
            wrapped.append(name)
        else:
            wrapped += [f"{name}.{n}" for n in add_lora(child, rank)]
    return wrapped


def prepare_student(model: nn.Module, config: TrainConfig) -> list[nn.Parameter]:
    """Freeze ``model`` except the tuned stages; return the parameters to train (LoRA factors or weights)."""
    model.eval()  # batch-norm keeps its running statistics; dropout is off
    for p in model.parameters():
        p.requires_grad_(False)
    params: list[nn.Parameter] = []
    for stage in tuned_stages(config.tune_from):
        module = getattr(model, stage)
        if config.lora_rank > 0 and stage not in HEAD:
            add_lora(module, config.lora_rank)
            params += [p for n, p in module.named_parameters() if ".down." in f".{n}" or ".up." in f".{n}"]
        else:
            params += list(module.parameters())
    for p in params:
        p.requires_grad_(True)
    return params


def run_stages(model: nn.Module, x: torch.Tensor, stages: tuple[str, ...]) -> torch.Tensor:
    """``x`` through ``stages`` of ``model`` in order (as ``InceptionResnetV1.forward``, unnormalised)."""
    for stage in stages:
        if stage == "last_linear":
            x = x.view(x.shape[0], -1)
        x = getattr(model, stage)(x)
    return x


def embed_all(model: nn.Module, crops: npt.NDArray[np.uint8], batch: int = 64) -> torch.Tensor:
    """Unit embeddings (N x 512 float32, on the CPU) of ``crops`` through the whole ``model``, without gradients."""
    device = next(model.parameters()).device
    out = []
    with torch.inference_mode():
        for i in range(0, len(crops), batch):
            x = preprocess(crops[i : i + batch], str(device))
            out.append(nn.functional.normalize(run_stages(model, x, STAGES), dim=1).cpu())
    return torch.cat(out) if out else torch.zeros(0, 512)


@dataclass
class Targets:
    """The teacher's embeddings of every training crop, clean, and of its mirror: (N, 2, 512) float32."""

    clean: torch.Tensor
    labels: torch.Tensor

    def to(self, device: str) -> Targets:
        return Targets(self.clean.to(device), self.labels.to(device))

    @property
    def bank(self) -> torch.Tensor:
        return self.clean.reshape(-1, self.clean.shape[-1])

    @property
    def bank_labels(self) -> torch.Tensor:
        return self.labels.repeat_interleave(2)


def teacher_targets(teacher: nn.Module, faces: FaceSet) -> Targets:
    crops = np.stack([clean_crop(img, det) for img, det in zip(faces.images, faces.detections, strict=True)])
    plain, mirrored = embed_all(teacher, crops), embed_all(teacher, np.ascontiguousarray(crops[:, :, ::-1]))
    return Targets(torch.stack([plain, mirrored], dim=1), torch.from_numpy(faces.labels))


def losses(student: torch.Tensor, idx: torch.Tensor, flips: torch.Tensor, targets: Targets,
           temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(distill, identity) losses of a batch of unit student embeddings; see the module docstring."""
    own = targets.clean[idx, flips.long()]
    distill = (1.0 - (student * own).sum(dim=1)).mean()
    logits = student @ targets.bank.T / temperature
    same = targets.bank_labels[None, :] == targets.labels[idx][:, None]
    positive = torch.logsumexp(logits.masked_fill(~same, float("-inf")), dim=1)
    identity = (torch.logsumexp(logits, dim=1) - positive).mean()
    return distill, identity


_FACES: list[FaceSet] = []  # the training faces, for worker processes (forked: shared, not pickled)
_DETECTORS: dict[int, Detector] = {}  # one detector per process (pid), made on first use


def _detector(model_dir: Path | None) -> Detector:
    """This process's product detector (the default ``DetectSettings`` on one thread, from ``model_dir``, else the
    settings' ``model_dir``), for scene samples."""
    pid = os.getpid()
    if pid not in _DETECTORS:
        from rfr.core.settings import DetectSettings, load_settings
        from rfr.face.runners import make_detector

        _DETECTORS[pid] = make_detector(DetectSettings(threads=1),
                                        model_dir if model_dir is not None else load_settings().model_dir)
    return _DETECTORS[pid]


def sample_crop(i: int, seed: tuple[int, int, int], recipe: Recipe,
                model_dir: Path | None = None) -> tuple[npt.NDArray[np.uint8], bool, str]:
    """A fresh degraded crop of training photo ``i`` (mirrored or not) and how it was made
    (:func:`rfr.tools.train.data.lowres_sample`), from its own seed (worker-safe); ``model_dir`` holds the detector of
    scene samples."""
    faces = _FACES[-1]
    rng = np.random.default_rng(seed)
    detector = _detector(model_dir) if recipe.scene > 0 else None
    crop, kind = lowres_sample(faces.images[i], faces.detections[i], rng, recipe, detector)
    flip = bool(rng.random() < 0.5)
    return (np.ascontiguousarray(crop[:, ::-1]) if flip else crop), flip, kind


class CropMaker:
    """Makes each step's crops, in this process or in ``workers`` forked ones; sample ``j`` of step ``s`` draws
    from the seed ``(config.seed, s, j)``, so the crops are the same whatever the number of workers."""

    def __init__(self, faces: FaceSet, config: TrainConfig, model_dir: Path | None = None) -> None:
        _FACES.append(faces)
        self.config = config
        self.model_dir = model_dir
        self.kinds: Counter[str] = Counter()  # samples made so far, by how (lowres_sample's kinds)
        self.pool = None
        if config.workers > 0:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self.pool = ProcessPoolExecutor(config.workers, mp_context=multiprocessing.get_context("fork"))

    def __call__(self, step: int, idx: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_]]:
        seeds = [(self.config.seed, step, j) for j in range(len(idx))]
        recipes = [self.config.recipe] * len(idx)
        mapper = self.pool.map if self.pool is not None else map
        made = list(mapper(sample_crop, idx.tolist(), seeds, recipes, [self.model_dir] * len(idx)))
        self.kinds.update(kind for _, _, kind in made)
        return np.stack([c for c, _, _ in made]), np.array([f for _, f, _ in made])

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
        _FACES.clear()
        for detector in _DETECTORS.values():
            close_detector(detector)
        _DETECTORS.clear()


def schedule(step: int, steps: int) -> float:
    """Learning-rate factor: 5% linear warm-up, then cosine to 0."""
    warm = max(1, steps // 20)
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))


def train(base: dict[str, torch.Tensor], faces: FaceSet, config: TrainConfig,
          model_dir: Path | None = None) -> nn.Module:
    """The fine-tuned student on the CPU (LoRA still unmerged; see :func:`extract_delta`). torch's process-wide
    determinism and thread count are set for the run and restored after it. ``model_dir`` holds the detector
    the recipe's scene samples use (default: the settings' ``model_dir``)."""
    previous = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    try:
        deterministic(config)
        return _train(base, faces, config, model_dir)
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.set_num_threads(previous[1])


def _train(base: dict[str, torch.Tensor], faces: FaceSet, config: TrainConfig, model_dir: Path | None) -> nn.Module:
    rng = np.random.default_rng(config.seed)
    targets = teacher_targets(build_model(base).to(config.device), faces).to(config.device)
    student = build_model(base)
    params = prepare_student(student, config)
    student.to(config.device)
    head = [p for s in HEAD for p in getattr(student, s).parameters()]
    body = [p for p in params if all(p is not h for h in head)]
    optimiser = torch.optim.Adam([{"params": body, "lr": config.lr}, {"params": head, "lr": config.head_lr}])
    frozen, tuned = STAGES[: STAGES.index(config.tune_from)], tuned_stages(config.tune_from)
    order: list[int] = []
    started = time.perf_counter()
    make_crops = CropMaker(faces, config, model_dir)
    for step in range(config.steps):
        while len(order) < config.batch:
            order += rng.permutation(len(faces)).tolist()
        idx, order = np.array(order[: config.batch]), order[config.batch :]
        crops, flips = make_crops(step, idx)
        for group, lr in zip(optimiser.param_groups, (config.lr, config.head_lr), strict=True):
            group["lr"] = lr * schedule(step, config.steps)
        with torch.no_grad():
            hidden = run_stages(student, preprocess(crops, config.device), frozen)
        emb = nn.functional.normalize(run_stages(student, hidden, tuned), dim=1)
        distill, identity = losses(emb, torch.from_numpy(idx).to(config.device),
                                   torch.from_numpy(flips).to(config.device), targets, config.temperature)
        loss = config.distill_weight * distill + config.identity_weight * identity
        optimiser.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimiser.step()
        if step % 25 == 0 or step == config.steps - 1:
            logger.info("step %d/%d distill %.4f identity %.4f (%.0fs)", step, config.steps, float(distill.detach()),
                        float(identity.detach()), time.perf_counter() - started)
    logger.info("training samples by kind: %s (scene_missed: the detector missed the face in its scene and the "
                "keypoint sample stood in)", dict(sorted(make_crops.kinds.items())))
    make_crops.close()
    return student.cpu()


def deterministic(config: TrainConfig) -> None:
    """Seeds, deterministic kernels, a fixed CPU thread count, and strict fp32 on CUDA (no TF32)."""
    if config.device == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(config.seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(config.threads)


def extract_delta(student: nn.Module, base: dict[str, torch.Tensor], config: TrainConfig,
                  dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """What ships: the tuned weights that differ from ``base`` and the LoRA factors (scale folded), in ``dtype``."""
    delta: dict[str, torch.Tensor] = {}
    for name, module in student.named_modules():
        if isinstance(module, LoraConv):
            key = f"{name}.weight"
            delta[key + ".lora_down"] = module.down.weight.detach().to(dtype).clone()
            delta[key + ".lora_up"] = module.up.weight.detach()[:, :, 0, 0].to(dtype).clone()
    tuned = tuned_stages(config.tune_from)
    for key, value in student.state_dict().items():  # fully tuned stages (a LoRA-wrapped weight keeps its base)
        if key in base and key.split(".")[0] in tuned and not torch.equal(value, base[key]):
            delta[key] = value.detach().to(dtype).clone()
    return delta


def config_summary(config: TrainConfig) -> dict[str, object]:
    return asdict(config)


if __name__ == "__main__":  # python -m rfr.tools.train.lowres --labelled ../shared/faces/lfw
    from rfr.tools.train.command import main

    main()
