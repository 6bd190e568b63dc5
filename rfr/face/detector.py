"""Face detection: MediaPipe Tasks ``FaceDetector`` (BlazeFace short-range) over a multi-scale tile pyramid.

The short-range model sees a 128x128 input and finds faces reliably only from about 18 px wide there (0.14 of
its input side; measured on mild CCTV-like scenes: 16 px -> 0.95 recall, 13 px -> 0.77, 10 px -> 0.3). On a
whole 1080p frame (letterboxed to 128) that means faces of ~270 px and up. So the model also runs over
overlapping square tiles: a tile of side ``T`` finds faces from ``0.14 * T`` wide, and a face up to
``tile_overlap * T`` wide lies whole inside at least one tile. A strategy is the whole frame plus a pyramid of
tile sides starting at its first tile and growing by ``tile_overlap / 0.14`` (1.79 at the default overlap
0.25) while smaller than the frame, so each level reliably finds the faces too big to lie whole in the level
below. "auto" starts at ``min_face_px / 0.14`` (229 px for 32 px faces); "tilesN" at N; "full" uses no tiles.
Tiles smaller than the model input are upscaled to it (faces under 18 px). In each tile, boxes cut by an
inner tile edge (another tile holds that face whole) and boxes larger than the level is responsible for are
dropped; the rest are mapped to image pixels and merged with greedy NMS.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from rfr.core.geometry import Box

if TYPE_CHECKING:
    from mediapipe.tasks.python.components.containers.detections import Detection as MpDetection
    from mediapipe.tasks.python.vision import FaceDetector

    from rfr.core.settings import DetectSettings

logger = logging.getLogger(__name__)

MODEL_INPUT_PX = 128
MIN_FACE_FRACTION = 0.14
"""Smallest face width the short-range model finds reliably, as a fraction of its input side (measured)."""

EDGE_MARGIN = 0.01
"""A tile detection within this fraction of the tile side from an inner tile edge counts as cut."""

MAX_FACE_SLACK = 1.25
"""A tile level keeps faces up to ``MAX_FACE_SLACK * tile_overlap * side`` wide; bigger ones belong to the
next, coarser level (which finds them with more context). This drops the large, weak boxes the model
puts on plain texture when it sees a small tile."""

CENTRE_SLACK = 0.25
"""nms containment: how far (fraction of the larger box) the centres of a face and a box around it may be apart."""

FIXED_STRATEGIES: dict[str, int | None] = {"full": None, "tiles540": 540, "tiles360": 360, "tiles256": 256}
STRATEGIES: tuple[str, ...] = (*FIXED_STRATEGIES, "auto")

Point = tuple[float, float]


@dataclass(frozen=True)
class Detection:
    """One face. ``box`` is (x, y, w, h) in pixels of the original image; ``keypoints`` are pixel (x, y) in
    MediaPipe order: right eye, left eye, nose tip, mouth, right ear tragion, left ear tragion (the subject's
    right eye is on the image's left)."""

    box: Box
    score: float
    keypoints: tuple[Point, ...]
    gate_keypoints: tuple[Point, ...] | None = None
    """The keypoints the quality gate reads when they are not ``keypoints``: a face whose keypoints were measured
    again for alignment (rfr/face/refine.py) keeps those of its detection here, the kind the gate's pose limits were
    measured on (rfr/face/quality.py). None: ``keypoints``."""

    def __post_init__(self) -> None:
        if not isinstance(self.box, Box):  # an (x, y, w, h) sequence, as MediaPipe and tests give it
            object.__setattr__(self, "box", Box.of(self.box))

    @property
    def gate_points(self) -> tuple[Point, ...]:
        """The keypoints the quality gate judges the pose and eye distance by."""
        return self.keypoints if self.gate_keypoints is None else self.gate_keypoints


class Detector(Protocol):
    """Finds faces in an RGB uint8 (H, W, 3) image; best score first."""

    def detect(self, image_rgb: npt.NDArray[np.uint8]) -> list[Detection]: ...


def close_detector(detector: Detector) -> None:
    """Free a detector's native resources, if it holds any (its ``close``)."""
    close = getattr(detector, "close", None)
    if callable(close):
        close()


@dataclass(frozen=True)
class Tile:
    x: int
    y: int
    w: int
    h: int


def pyramid(first_side: int, tile_overlap: float, frame_side: int) -> tuple[int, ...]:
    """Tile sides from ``first_side`` growing by ``tile_overlap / MIN_FACE_FRACTION`` while smaller than the
    frame, so each level reliably finds the faces too big to lie whole in a tile of the level below."""
    growth = max(1.25, tile_overlap / MIN_FACE_FRACTION)
    sizes: list[int] = []
    side = float(max(8, first_side))
    while side < frame_side:
        sizes.append(round(side))
        side *= growth
    return tuple(sizes)


def first_tile(min_face_px: float) -> int:
    """Smallest tile side on which a ``min_face_px`` face is still reliably found."""
    return math.ceil(min_face_px / MIN_FACE_FRACTION)


def tile_sizes(strategy: str, settings: DetectSettings, width: int, height: int) -> tuple[int, ...]:
    """The tile sides a strategy uses on a ``width`` x ``height`` image (the whole frame always runs too).

    "full" uses none; "tilesN" is the pyramid starting at side N; "auto" starts where ``min_face_px`` needs.
    """
    if strategy == "auto":
        start: int | None = first_tile(settings.min_face_px)
    elif strategy in FIXED_STRATEGIES:
        start = FIXED_STRATEGIES[strategy]
    else:
        raise ValueError(f"unknown detection strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    return () if start is None else pyramid(start, settings.tile_overlap, max(width, height))


def _starts(length: int, tile: int, stride: int) -> list[int]:
    if tile >= length:
        return [0]
    count = math.ceil((length - tile) / stride) + 1
    step = (length - tile) / (count - 1)
    return [round(i * step) for i in range(count)]


def tile_grid(width: int, height: int, tile: int, overlap: float) -> list[Tile]:
    """Square tiles of side ``tile`` (clipped to the image) covering it with at least ``overlap`` overlap,
    spread evenly so the last tile ends on the image border."""
    stride = max(1, math.floor(tile * (1.0 - overlap)))
    tw, th = min(tile, width), min(tile, height)
    return [Tile(x, y, tw, th) for y in _starts(height, tile, stride) for x in _starts(width, tile, stride)]


def iou(a: Box | Sequence[float], b: Box | Sequence[float]) -> float:
    """Intersection over union of two boxes (:meth:`rfr.core.geometry.Box.iou`)."""
    return Box.of(a).iou(Box.of(b))


def inside(inner: Box, outer: Box) -> float:
    """How much of ``inner`` lies inside ``outer``: their intersection over ``inner``'s area, in [0, 1]."""
    return inner.intersection(outer) / inner.area if inner.area > 0 else 0.0


def nms(detections: list[Detection], iou_threshold: float, containment: float | None = None) -> list[Detection]:
    """Greedy non-maximum suppression, highest score first: a detection is dropped when its IoU with a kept one
    exceeds ``iou_threshold``, or (``containment`` set) when it is a LARGER box than a kept, stronger one that lies
    mostly inside it (at least ``containment`` of the kept box's area) and about its centre. That removes the large
    spurious box around a real face (IoU 0.23, so IoU alone keeps both: one person, two candidate lists) and never
    a smaller face inside a stronger, larger box (a child's face in front of an adult's). Caps nothing: the detect
    stage's ``max_faces`` guard applies after the quality gate, and reports what it drops."""
    kept: list[Detection] = []
    for det in sorted(detections, key=lambda d: d.score, reverse=True):
        if all(det.box.iou(k.box) <= iou_threshold and not _surrounds(det.box, k.box, containment) for k in kept):
            kept.append(det)
    return kept


def _surrounds(box: Box, stronger: Box, containment: float | None) -> bool:
    """``box`` is a larger box around ``stronger``: it holds it (``containment``) about its own centre (within a
    quarter of its size on each axis), as a spurious box around one face does; a second face in front of
    another sits off-centre (a child's face at an adult's chin: half the adult's box away)."""
    if containment is None or box.area <= stronger.area or inside(stronger, box) < containment:
        return False
    (cx, cy), (sx, sy) = box.centre, stronger.centre
    return abs(cx - sx) <= CENTRE_SLACK * box.width and abs(cy - sy) <= CENTRE_SLACK * box.height


def _cut_by_inner_edge(box: Box, tile: Tile, width: int, height: int) -> bool:
    margin = EDGE_MARGIN * max(tile.w, tile.h)
    x0, y0 = box.x - tile.x, box.y - tile.y
    x1, y1 = x0 + box.width, y0 + box.height
    return (
        (tile.x > 0 and x0 < margin)
        or (tile.y > 0 and y0 < margin)
        or (tile.x + tile.w < width and x1 > tile.w - margin)
        or (tile.y + tile.h < height and y1 > tile.h - margin)
    )


def _to_detection(raw: MpDetection, tile: Tile, in_w: int, in_h: int) -> Detection:
    """Map a Tasks detection on an ``in_w`` x ``in_h`` model input made from ``tile`` to image pixels."""
    sx, sy = tile.w / in_w, tile.h / in_h
    bb = raw.bounding_box
    box = Box(tile.x + bb.origin_x * sx, tile.y + bb.origin_y * sy, bb.width * sx, bb.height * sy)
    points = tuple((tile.x + (kp.x or 0.0) * tile.w, tile.y + (kp.y or 0.0) * tile.h) for kp in raw.keypoints or [])
    score = float(raw.categories[0].score or 0.0) if raw.categories else 0.0
    return Detection(box=box, score=score, keypoints=points)


class MediaPipeDetector:
    """:class:`Detector` over MediaPipe Tasks with a named multi-scale strategy (see :data:`STRATEGIES`).

    The Tasks model loads lazily on the first :meth:`detect`. Not thread-safe: use one instance per worker
    thread. Call :meth:`close` (or use it as a context manager) to free the native graph: a Tasks detector
    still open at interpreter exit makes MediaPipe 0.10.31 print a harmless traceback from its ``__del__``.
    """

    def __init__(self, model_path: Path, settings: DetectSettings, strategy: str | None = None) -> None:
        self.model_path = Path(model_path)
        self.settings = settings
        self.strategy = strategy if strategy is not None else settings.strategy
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown detection strategy {self.strategy!r}; expected one of {', '.join(STRATEGIES)}")
        self._task: FaceDetector | None = None
        self.model_calls = 0
        self.model_id = f"mediapipe-blazeface:{self.model_path.stem}"

    def load(self) -> MediaPipeDetector:
        """Build the Tasks graph now (idempotent; :class:`rfr.models.lifecycle.Model`); the service calls it at
        start-up, so a broken model file stops it before it consumes anything."""
        self._load()
        return self

    def _load(self) -> FaceDetector:
        if self._task is None:
            from mediapipe.tasks.python import BaseOptions, vision

            if not self.model_path.is_file():
                raise FileNotFoundError(f"face detector model not found at {self.model_path}")
            options = vision.FaceDetectorOptions(
                base_options=BaseOptions(model_asset_path=str(self.model_path)),
                running_mode=vision.RunningMode.IMAGE,
                min_detection_confidence=self.settings.score_threshold,
                min_suppression_threshold=self.settings.nms_iou,
            )
            self._task = vision.FaceDetector.create_from_options(options)
            logger.info("loaded face detector %s (strategy %s)", self.model_path.name, self.strategy)
        return self._task

    def _detect_raw(self, crop: npt.NDArray[np.uint8]) -> list[MpDetection]:
        """One model call on a contiguous RGB array."""
        import mediapipe as mp

        result = self._load().detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=crop))
        self.model_calls += 1
        return list(result.detections)

    def _run(self, image_rgb: npt.NDArray[np.uint8], tile: Tile) -> list[Detection]:
        crop = image_rgb[tile.y : tile.y + tile.h, tile.x : tile.x + tile.w]
        if max(tile.w, tile.h) < MODEL_INPUT_PX:
            scale = MODEL_INPUT_PX / max(tile.w, tile.h)
            size = (max(1, round(tile.w * scale)), max(1, round(tile.h * scale)))
            crop = np.asarray(cv2.resize(crop, size, interpolation=cv2.INTER_CUBIC), dtype=np.uint8)
        crop = np.ascontiguousarray(crop)
        return [_to_detection(raw, tile, crop.shape[1], crop.shape[0]) for raw in self._detect_raw(crop)]

    def detect(self, image_rgb: npt.NDArray[np.uint8]) -> list[Detection]:
        """Every face in an RGB uint8 image (H, W, 3), best score first."""
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {image_rgb.dtype} {image_rgb.shape}")
        height, width = image_rgb.shape[:2]
        found = self._run(image_rgb, Tile(0, 0, width, height))
        for side in tile_sizes(self.strategy, self.settings, width, height):
            max_face = MAX_FACE_SLACK * self.settings.tile_overlap * side
            for tile in tile_grid(width, height, side, self.settings.tile_overlap):
                found.extend(
                    d
                    for d in self._run(image_rgb, tile)
                    if d.box.width <= max_face and not _cut_by_inner_edge(d.box, tile, width, height)
                )
        return nms(found, self.settings.nms_iou, self.settings.nms_containment)

    def close(self) -> None:
        """Free the native Tasks graph; a later :meth:`detect` loads it again."""
        if self._task is not None:
            self._task.close()
            self._task = None

    def __enter__(self) -> MediaPipeDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
