"""The default face detector: BlazeFace short-range run fully convolutionally over a few whole pyramid levels.

MediaPipe Tasks runs the network on 128x128 inputs only, so :class:`~rfr.face.detector.MediaPipeDetector` covers a
1080p frame with ~100 overlapping tiles. The network itself is fully convolutional (rfr/face/blazeface.py), so this
detector runs it once per pyramid level over the whole scaled frame, with no tiles and no overlap:

- level 0 scales the frame so that a face of ``min_face_px`` is :data:`MODEL_FACE_PX` (18 px) wide, the smallest
  the model finds reliably (the same scale as the tile detector's first tile, 0.56 for 32 px faces);
- each next level is :data:`LEVEL_GROWTH` times smaller, and a level keeps only faces up to
  ``MAX_FACE_SLACK * MODEL_FACE_PX * LEVEL_GROWTH`` input pixels wide (bigger ones belong to the next level, which
  sees them with context; this drops the large weak boxes the model puts on texture);
- the last level is the whole frame letterboxed into 128x128, as MediaPipe itself would run it, keeping every face.

Each level's detections go through MediaPipe's weighted NMS (as the Tasks graph does), are mapped to image pixels,
and all levels are merged by :func:`rfr.face.detector.nms` (IoU and containment). The network runs behind a
:class:`Runner`: LiteRT on the CPU (rfr/face/runners.py) or the PyTorch port on CUDA (rfr/face/blazeface_torch.py).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from rfr.core.geometry import Box
from rfr.face.blazeface import RawFaces, decode, logit_cut, weighted_nms
from rfr.face.detector import (
    FIXED_STRATEGIES,
    MAX_FACE_SLACK,
    MIN_FACE_FRACTION,
    MODEL_INPUT_PX,
    STRATEGIES,
    Detection,
    nms,
)
from rfr.face.refine import face_view, refined

if TYPE_CHECKING:
    from rfr.core.settings import DetectSettings

logger = logging.getLogger(__name__)

MODEL_FACE_PX = MIN_FACE_FRACTION * MODEL_INPUT_PX
"""Smallest face width (input pixels, 17.9) the short-range model finds reliably (measured; detector.py)."""

LEVEL_GROWTH = 4.0
"""Scale ratio between pyramid levels: a level keeps faces of 18-90 input pixels (benchmarks/bench_detect.py
--levels measures recall against face size inside one level)."""


MAX_INPUT_SIDE = 1088
"""Longest network input side: a larger level (a 4K or 40 MP still) runs as overlapping parts, so memory stays
bounded (LiteRT needs ~200 bytes per input pixel: 2.7 GB for a 40 MP still's level 0 in one piece)."""

PART_OVERLAP = 128
"""Overlap of a level's parts (input pixels): more than the widest face a level keeps (90), so every face lies whole
in some part; a box cut by an inner part edge is dropped (that part does not hold the face whole)."""

SIZE_BUCKET = 32
"""Input sides are rounded up to this, so frames of nearby sizes share LiteRT interpreters."""

TILE_MAX_FACE = MAX_FACE_SLACK * 0.25 * MODEL_INPUT_PX
"""Widest face (40 input pixels) a tile of the tile detector keeps at the default overlap."""

LARGE_FACE_MIN_SCORE = 0.7
"""A level other than the last keeps a face wider than :data:`TILE_MAX_FACE` only from this score: the model puts
large weak boxes (scores 0.50-0.64, 90-160 px on a 1080p frame) on plain texture when it sees it at fine scale
(benchmarks/bench_detect.py, false detections per frame), which the tiles never showed it."""

Floats = npt.NDArray[np.float32]
PartOutput = tuple["Part", npt.NDArray[np.int64] | None, Floats, Floats]
"""One frame's outputs for one part of a level: the part, its anchor indices (None: all anchors), regressors
(K, 16) and logits (K,)."""


class Runner(Protocol):
    """Runs the BlazeFace short-range network on a batch (N, H, W, 3) float32 in [-1, 1], H and W multiples of 16;
    returns regressors (N, A, 16) and logits (N, A) float32 (A: :func:`rfr.face.blazeface.anchor_count`)."""

    name: str

    def run(self, batch: Floats) -> tuple[Floats, Floats]: ...


@dataclass(frozen=True)
class Part:
    """A region of a level (level pixels: ``x``, ``y``, ``w``, ``h``) run as one network input of ``input_w`` x
    ``input_h`` (padded right and bottom)."""

    x: int
    y: int
    w: int
    h: int
    input_w: int
    input_h: int


@dataclass(frozen=True)
class Level:
    """One pyramid level: the frame scaled by ``scale`` to ``width`` x ``height``, run as one network input or, when
    larger than :data:`MAX_INPUT_SIDE`, as overlapping ``parts``; ``max_face`` is the widest face (input pixels)
    it keeps, None: every face."""

    scale: float
    width: int
    height: int
    max_face: float | None
    parts: tuple[Part, ...]


def _round_up(value: int, multiple: int) -> int:
    return max(multiple, math.ceil(value / multiple) * multiple)


def _spans(length: int) -> list[tuple[int, int]]:
    """(start, size) of the fewest spans of at most MAX_INPUT_SIDE covering ``length`` with PART_OVERLAP overlap."""
    if length <= MAX_INPUT_SIDE:
        return [(0, length)]
    count = math.ceil((length - PART_OVERLAP) / (MAX_INPUT_SIDE - PART_OVERLAP))
    size = min(length, math.ceil((length + (count - 1) * PART_OVERLAP) / count))
    step = (length - size) / (count - 1)
    return [(round(i * step), size) for i in range(count)]


def parts_of(width: int, height: int) -> tuple[Part, ...]:
    """The parts a ``width`` x ``height`` level runs as: itself when both sides fit :data:`MAX_INPUT_SIDE`."""
    return tuple(Part(x, y, w, h, _round_up(w, SIZE_BUCKET), _round_up(h, SIZE_BUCKET))
                 for y, h in _spans(height) for x, w in _spans(width))


def first_scale(strategy: str, settings: DetectSettings) -> float | None:
    """Level 0's scale for a strategy: the tile detector's first tile maps to the model input (auto: from
    ``min_face_px``; tilesN: N), None for "full" (the letterboxed frame only).

    Raises:
        ValueError: an unknown strategy.
    """
    if strategy == "auto":
        return MODEL_FACE_PX / settings.min_face_px
    if strategy in FIXED_STRATEGIES:
        side = FIXED_STRATEGIES[strategy]
        return None if side is None else MODEL_INPUT_PX / side
    raise ValueError(f"unknown detection strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")


def plan_levels(width: int, height: int, scale0: float | None) -> list[Level]:
    """The pyramid for a ``width`` x ``height`` frame: levels from ``scale0`` shrinking by :data:`LEVEL_GROWTH`
    while the scaled frame's longer side exceeds 1.25 model inputs (160 px), then the whole frame letterboxed
    (padded right and bottom) into the 128x128 model input."""
    levels: list[Level] = []
    longest = max(width, height)
    final = MODEL_INPUT_PX / longest
    scale = scale0
    while scale is not None and longest * scale > MODEL_INPUT_PX * 1.25:
        w, h = max(1, round(width * scale)), max(1, round(height * scale))
        levels.append(Level(scale, w, h, MAX_FACE_SLACK * MODEL_FACE_PX * LEVEL_GROWTH, parts_of(w, h)))
        scale /= LEVEL_GROWTH
    w, h = max(1, round(width * final)), max(1, round(height * final))
    levels.append(Level(final, w, h, None, (Part(0, 0, w, h, MODEL_INPUT_PX, MODEL_INPUT_PX),)))
    return levels


def part_input(image: npt.NDArray[np.uint8], part: Part) -> Floats:
    """The network input (input_h, input_w, 3) float32 in [-1, 1] of one part of a level image; padding is 0
    (mid grey), on the right and bottom."""
    out = np.zeros((part.input_h, part.input_w, 3), np.float32)
    region = image[part.y : part.y + part.h, part.x : part.x + part.w]
    np.multiply(region, np.float32(2.0 / 255.0), out=out[: part.h, : part.w], casting="unsafe")
    out[: part.h, : part.w] -= 1.0
    return out


def whole_input_size(level: Level) -> tuple[int, int]:
    """(input_w, input_h) of a whole level run as one input (the GPU path; the last level is 128x128)."""
    if level.max_face is None:
        return MODEL_INPUT_PX, MODEL_INPUT_PX
    return _round_up(level.width, SIZE_BUCKET), _round_up(level.height, SIZE_BUCKET)


def _cut_by_inner_edge(boxes: Floats, part: Part, level: Level) -> npt.NDArray[np.bool_]:
    """Boxes (N, 4; x0, y0, x1, y1 in part pixels) within 2 px of an edge the part shares with another part."""
    margin = 2.0
    return ((part.x > 0) & (boxes[:, 0] < margin)) | ((part.y > 0) & (boxes[:, 1] < margin)) \
        | ((part.x + part.w < level.width) & (boxes[:, 2] > part.w - margin)) \
        | ((part.y + part.h < level.height) & (boxes[:, 3] > part.h - margin))


def rescale(image: npt.NDArray[np.uint8], width: int, height: int) -> npt.NDArray[np.uint8]:
    """``image`` resized to ``width`` x ``height``: bilinear when shrinking by less than 2 (as MediaPipe scales its
    tiles; OpenCV's area filter costs 17 ms on a 1080p frame at 0.56), area-averaged beyond (no aliasing)."""
    shrink = image.shape[1] / width
    method = cv2.INTER_AREA if shrink >= 2.0 else cv2.INTER_LINEAR
    return np.asarray(cv2.resize(image, (width, height), interpolation=method), dtype=np.uint8)


def to_detections(faces: RawFaces, scale: float) -> list[Detection]:
    """Decoded faces in a level's input pixels -> :class:`Detection` in image pixels, best score first."""
    out = []
    for box, points, score in zip(faces.boxes / scale, faces.keypoints / scale, faces.scores, strict=True):
        x0, y0, x1, y1 = (float(v) for v in box)
        out.append(Detection(box=Box(x0, y0, x1 - x0, y1 - y0), score=float(score),
                             keypoints=tuple((float(x), float(y)) for x, y in points)))
    return out


class BlazeFaceDetector:
    """:class:`rfr.face.detector.Detector` running BlazeFace short-range over whole pyramid levels (module doc).

    ``runner`` runs the network (LiteRT on the CPU, PyTorch on CUDA). Not thread-safe: one per worker thread.
    ``model_calls`` counts network runs (one per level).
    """

    def __init__(self, runner: Runner, settings: DetectSettings, strategy: str | None = None) -> None:
        self.runner = runner
        self.settings = settings
        self.strategy = strategy if strategy is not None else settings.strategy
        first_scale(self.strategy, settings)  # refuses an unknown strategy now
        self.model_calls = 0
        self.model_id = f"blazeface-short-range:{runner.name}"
        self.refine = bool(getattr(settings, "refine_keypoints", True))

    def load(self) -> BlazeFaceDetector:
        """Nothing to build lazily: the runner loaded its model (:class:`rfr.models.lifecycle.Model`)."""
        return self

    def levels(self, width: int, height: int) -> list[Level]:
        return plan_levels(width, height, first_scale(self.strategy, self.settings))

    def detect(self, image_rgb: npt.NDArray[np.uint8]) -> list[Detection]:
        """Every face in an RGB uint8 image (H, W, 3), best score first.

        Raises:
            ValueError: not an RGB uint8 image.
        """
        return self.detect_batch([image_rgb])[0]

    def detect_batch(self, images: Sequence[npt.NDArray[np.uint8]]) -> list[list[Detection]]:
        """:meth:`detect` for several images: images of one size run each level as one batch (what pays on a GPU).

        Raises:
            ValueError: an image that is not RGB uint8, or an empty one.
        """
        groups: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape:
                raise ValueError(f"expected a non-empty RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
            groups.setdefault((image.shape[0], image.shape[1]), []).append(i)
        out: list[list[Detection]] = [[] for _ in images]
        finest = [1.0] * len(images)
        for (height, width), members in groups.items():
            levels = self.levels(width, height)
            for i in members:
                finest[i] = levels[0].scale
            for level, outputs in zip(levels, self._outputs([images[i] for i in members], levels), strict=True):
                for i, frame_parts in zip(members, outputs, strict=True):
                    for part, indices, regressors, logits in frame_parts:
                        out[i].extend(self._part_faces(level, part, regressors, logits, indices))
        merged = [nms(found, self.settings.nms_iou, self.settings.nms_containment) for found in out]
        if self.refine:
            merged = [self._refine(image, found, scale)
                      for image, found, scale in zip(images, merged, finest, strict=True)]
        return merged

    def _refine(self, image: npt.NDArray[np.uint8], found: list[Detection], finest: float = 1.0) -> list[Detection]:
        """Keypoints of each small face measured again (rfr/face/refine.py) on a 128x128 view where the
        face is at the scale the model places landmarks best at (a 32 px face is 18 px at level 0: its keypoints
        then move by ~10 % of the face between two pyramids). Small: under
        :data:`TILE_MAX_FACE` input pixels at the image's finest level (``finest``, its scale); larger faces were
        seen at a good scale already. A face the second look does not find keeps its first keypoints."""
        small = [i for i, det in enumerate(found) if det.box.width * finest < TILE_MAX_FACE]
        if not small:
            return found
        views = [face_view(image, found[i].box) for i in small]
        regressors, logits = self.runner.run(np.stack([v.input for v in views]))
        self.model_calls += 1
        out = list(found)
        for i, view, reg, logit in zip(small, views, regressors, logits, strict=True):
            faces = weighted_nms(decode(reg, logit, MODEL_INPUT_PX, MODEL_INPUT_PX, self.settings.score_threshold),
                                 self.settings.nms_iou)
            out[i] = refined(found[i], view, faces)
        return out

    def _outputs(self, frames: list[npt.NDArray[np.uint8]], levels: list[Level]) -> Iterator[list[list[PartOutput]]]:
        """Per level, per frame, per part: (part, anchor indices or None, regressors, logits). A runner with a
        ``pyramid`` method (the GPU one) scales and selects on its device, each level whole; otherwise levels are
        made here and each part runs as one batch of the frames."""
        pyramid = getattr(self.runner, "pyramid", None)
        if callable(pyramid):
            for level, outputs in zip(levels, pyramid(frames, levels, logit_cut(self.settings.score_threshold)),
                                      strict=True):
                self.model_calls += 1
                whole = Part(0, 0, level.width, level.height, *whole_input_size(level))
                yield [[(whole, *output)] for output in outputs]
            return
        scaled = list(frames)
        for level in levels:
            scaled = [s if (s.shape[1], s.shape[0]) == (level.width, level.height)
                      else rescale(s, level.width, level.height) for s in scaled]
            per_frame: list[list[PartOutput]] = [[] for _ in scaled]
            for part in level.parts:
                regressors, logits = self.runner.run(np.stack([part_input(s, part) for s in scaled]))
                self.model_calls += 1
                for k in range(len(scaled)):
                    per_frame[k].append((part, None, regressors[k], logits[k]))
            yield per_frame

    def _part_faces(self, level: Level, part: Part, regressors: Floats, logits: Floats,
                    indices: npt.NDArray[np.int64] | None) -> list[Detection]:
        faces = weighted_nms(decode(regressors, logits, part.input_h, part.input_w, self.settings.score_threshold,
                                    indices), self.settings.nms_iou)
        if not len(faces):
            return []
        width = faces.boxes[:, 2] - faces.boxes[:, 0]
        keep = np.ones(len(faces), dtype=bool)
        if level.max_face is not None:
            keep &= (width <= level.max_face) & ((width <= TILE_MAX_FACE) | (faces.scores >= LARGE_FACE_MIN_SCORE))
        if len(level.parts) > 1:  # a box touching an inner part edge: another part holds that face whole
            keep &= ~_cut_by_inner_edge(faces.boxes, part, level)
        shift = np.asarray([part.x, part.y], np.float32)
        faces = RawFaces(faces.boxes[keep] + np.tile(shift, 2), faces.keypoints[keep] + shift, faces.scores[keep])
        return to_detections(faces, level.scale)

    def close(self) -> None:
        close = getattr(self.runner, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> BlazeFaceDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
