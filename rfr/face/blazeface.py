"""BlazeFace short-range outputs for an input of any size: anchors, decoding and MediaPipe's weighted NMS.

The short-range network (MediaPipe's ``face_detection_short_range.tflite``) is fully convolutional: made for a
128x128 input, it runs on any input whose sides are multiples of 16 and then gives one prediction per anchor of
two grids, concatenated in this order (row-major, anchors of a cell adjacent):

- stride 8: ``(H/8) x (W/8)`` cells, 2 anchors each;
- stride 16: ``(H/16) x (W/16)`` cells, 6 anchors each.

At 128x128 that is 16*16*2 + 8*8*6 = 896 anchors, MediaPipe's ``SsdAnchorsCalculator`` options for this model
(``num_layers: 4, strides: [8, 16, 16, 16], fixed_anchor_size: true, anchor_offset 0.5``: layers of one stride
share a grid). Each prediction is 16 regressor values and one logit. Decoding follows MediaPipe's
``TensorsToDetectionsCalculator`` (``x_scale = y_scale = w_scale = h_scale = 128``, fixed anchor size 1): in
pixels of the network input, the box centre is the anchor centre plus ``(r0, r1)``, its size ``(r2, r3)``, and
keypoint ``k`` is the anchor centre plus ``(r[4 + 2k], r[5 + 2k])``; the score is ``sigmoid(clip(logit, -100,
100))``. Keypoints are in MediaPipe's order (right eye, left eye, nose tip, mouth, right ear, left ear).

:func:`weighted_nms` is MediaPipe's ``NonMaxSuppressionCalculator`` in ``WEIGHTED`` mode (the face detection
graph's choice): each kept detection is the score-weighted mean of the candidates that overlap the best one.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

STRIDES: tuple[tuple[int, int], ...] = ((8, 2), (16, 6))
"""(stride in input pixels, anchors per cell) of the two output grids, in output order."""

INPUT_MULTIPLE = 16
"""Input sides must be multiples of the coarsest stride."""

REGRESSORS = 16
KEYPOINTS = 6
SCORE_CLIP = 100.0

Floats = npt.NDArray[np.float32]


@lru_cache(maxsize=32)
def anchor_centres(height: int, width: int) -> Floats:
    """Anchor centres (A, 2) as (x, y) input pixels for an input of ``height`` x ``width`` (multiples of 16).

    Raises:
        ValueError: a side that is not a positive multiple of 16.
    """
    if height <= 0 or width <= 0 or height % INPUT_MULTIPLE or width % INPUT_MULTIPLE:
        raise ValueError(f"input sides must be positive multiples of {INPUT_MULTIPLE}, got {width}x{height}")
    parts = []
    for stride, per_cell in STRIDES:
        ys, xs = np.mgrid[0 : height // stride, 0 : width // stride].astype(np.float32)
        centres = np.stack([(xs + 0.5) * stride, (ys + 0.5) * stride], axis=-1).reshape(-1, 2)
        parts.append(np.repeat(centres, per_cell, axis=0))
    out = np.concatenate(parts).astype(np.float32)
    out.flags.writeable = False
    return out


def anchor_count(height: int, width: int) -> int:
    """Number of anchors (predictions) for an input of ``height`` x ``width``."""
    return sum((height // s) * (width // s) * n for s, n in STRIDES)


@dataclass(frozen=True)
class RawFaces:
    """Decoded detections of one network input, in its pixels: ``boxes`` (N, 4) as x0, y0, x1, y1, ``keypoints``
    (N, 6, 2) as x, y, ``scores`` (N,) in [0, 1]. All float32."""

    boxes: Floats
    keypoints: Floats
    scores: Floats

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @classmethod
    def empty(cls) -> RawFaces:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0, KEYPOINTS, 2), np.float32), np.zeros(0, np.float32))


def logit_cut(min_score: float) -> float:
    """The logit at or above which a prediction scores at least ``min_score`` (sigmoid is monotonic)."""
    if min_score <= 0.0:
        return -np.inf
    if min_score >= 1.0:
        return np.inf
    return float(np.log(min_score / (1.0 - min_score)))


def decode(regressors: Floats, logits: Floats, height: int, width: int, min_score: float,
           indices: npt.NDArray[np.int64] | None = None) -> RawFaces:
    """Decode one input's outputs: ``regressors`` (A, 16) and ``logits`` (A,) or (A, 1) for an input of
    ``height`` x ``width``; keeps predictions scoring at least ``min_score``. With ``indices`` (K,), the outputs
    are only those anchors' rows (K, 16) and (K,), already selected (the GPU path selects before copying).

    Raises:
        ValueError: output sizes that do not match the input's anchors.
    """
    centres = anchor_centres(height, width)
    logits = logits.reshape(-1)
    rows = centres.shape[0] if indices is None else indices.shape[0]
    if regressors.shape != (rows, REGRESSORS) or logits.shape[0] != rows:
        raise ValueError(f"outputs {regressors.shape}/{logits.shape} do not fit a {width}x{height} input "
                         f"({rows} anchors)")
    keep = np.flatnonzero(logits >= logit_cut(min_score))
    if keep.size == 0:
        return RawFaces.empty()
    reg = regressors[keep]
    anchor = centres[keep] if indices is None else centres[indices[keep]]
    # float64: exp(100) overflows float32, which made a score of 0 and, in weighted_nms, a 0/0 box
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits[keep].astype(np.float64), -SCORE_CLIP, SCORE_CLIP)))
    cx, cy = anchor[:, 0] + reg[:, 0], anchor[:, 1] + reg[:, 1]
    half_w, half_h = reg[:, 2] / 2, reg[:, 3] / 2
    boxes = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)
    points = reg[:, 4:].reshape(-1, KEYPOINTS, 2) + anchor[:, None, :]
    return RawFaces(boxes.astype(np.float32), points.astype(np.float32), scores.astype(np.float32))


def pairwise_iou(box: Floats, boxes: Floats) -> Floats:
    """IoU of ``box`` (4,) against ``boxes`` (N, 4), both x0, y0, x1, y1."""
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = max(0.0, float((box[2] - box[0]) * (box[3] - box[1])))
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    union = area + areas - inter
    iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
    return iou.astype(np.float32)


def weighted_nms(faces: RawFaces, iou_threshold: float) -> RawFaces:
    """MediaPipe's weighted non-maximum suppression: repeatedly take the best remaining detection and every
    remaining one overlapping it by more than ``iou_threshold`` (IoU); keep their score-weighted mean box and
    keypoints with the best one's score. Best score first."""
    if len(faces) == 0:
        return faces
    order = np.argsort(-faces.scores, kind="stable")
    boxes, points, scores = faces.boxes[order], faces.keypoints[order], faces.scores[order]
    remaining = np.ones(len(scores), dtype=bool)
    out_boxes, out_points, out_scores = [], [], []
    for i in range(len(scores)):
        if not remaining[i]:
            continue
        iou = pairwise_iou(boxes[i], boxes)
        group = remaining & ((iou > iou_threshold) | (np.arange(len(scores)) == i))
        weights = scores[group][:, None].astype(np.float64)
        total = float(weights.sum())
        if total <= 0.0:  # every score rounded to 0: the best box as it is
            weights, total = (np.arange(len(scores))[group] == i)[:, None].astype(np.float64), 1.0
        out_boxes.append((boxes[group] * weights).sum(axis=0) / total)
        out_points.append((points[group] * weights[:, :, None]).sum(axis=0) / total)
        out_scores.append(scores[i])
        remaining &= ~group
    return RawFaces(np.asarray(out_boxes, np.float32), np.asarray(out_points, np.float32),
                    np.asarray(out_scores, np.float32))
