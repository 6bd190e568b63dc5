"""A second look at a small face: its keypoints measured again where the model measures them best.

The fast detector (rfr/face/fast_detector.py) finds a 32 px face at 18 px on its first pyramid level, where
BlazeFace's landmarks are coarse (between two pyramids they move by ~10 % of the face). Run again on a 128x128 view
in which the face is :data:`REFINE_FACE_FRACTION` of the input, as in the LFW photos the model places landmarks well
on, the same network gives keypoints that align small faces better (rank-1: docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from rfr.core.geometry import Box
from rfr.face.blazeface import RawFaces
from rfr.face.detector import MODEL_INPUT_PX, Detection

Floats = npt.NDArray[np.float32]

REFINE_FACE_FRACTION = 0.4
"""Face width over the side of the view the keypoints are measured again on (LFW photos, which the model places
landmarks well on, show the face at ~0.4 of the frame: rfr/tools/degrade.py LFW_FACE_FRACTION)."""


@dataclass(frozen=True)
class FaceView:
    """A 128x128 model input of the square image region (x, y, side) around one face."""

    x: float
    y: float
    side: float
    input: Floats


def face_view(image: npt.NDArray[np.uint8], box: Box) -> FaceView:
    """The view around a face: a square of side ``max(w, h) / REFINE_FACE_FRACTION`` centred on the box, scaled to
    the model input (area filter when shrinking by 2 or more), mid grey outside the image."""
    side = max(box.width, box.height) / REFINE_FACE_FRACTION
    cx, cy = box.centre
    x, y = cx - side / 2, cy - side / 2
    scale = MODEL_INPUT_PX / side
    matrix = np.array([[scale, 0.0, -x * scale], [0.0, scale, -y * scale]], np.float64)
    flags = cv2.INTER_AREA if scale < 0.5 else cv2.INTER_LINEAR
    view = cv2.warpAffine(image, matrix, (MODEL_INPUT_PX, MODEL_INPUT_PX), flags=flags,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(128, 128, 128))
    return FaceView(x, y, side, view.astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0))


def refined(det: Detection, view: FaceView, faces: RawFaces) -> Detection:
    """``det`` with the keypoints of the view's face that overlaps it most (IoU >= 0.5), else as it is. The box,
    score and the keypoints the gate reads (``gate_keypoints``) stay those of the pyramid level, so what the gate and
    the recall figures measure does not move; alignment (rfr/face/align.py) reads the new keypoints.

    Why the gate keeps the first keypoints: its pose limits were measured on detections' own keypoints, and on sharp
    small faces the second look puts the nose of a turned face further out; read by the gate, the refined keypoints
    rejected 8-9 clean 48 px probes of 584 as ``bad_pose`` against 2 (``rfr eval`` splits of seeds 0 and 1), some of
    them faces the search found (docs/benchmarks.md)."""
    if not len(faces):
        return det
    scale = view.side / MODEL_INPUT_PX
    boxes = faces.boxes * scale + np.asarray([view.x, view.y, view.x, view.y], np.float32)
    ious = [det.box.iou(Box(b[0], b[1], b[2] - b[0], b[3] - b[1])) for b in boxes]
    best = int(np.argmax(ious))
    if ious[best] < 0.5:
        return det
    points = faces.keypoints[best] * scale + np.asarray([view.x, view.y], np.float32)
    return Detection(box=det.box, score=det.score, keypoints=tuple((float(px), float(py)) for px, py in points),
                     gate_keypoints=det.gate_points)
