"""Face quality: size, detector score, sharpness and a landmark pose check, and the gate that rejects faces
too poor to search with.

The ``DetectSettings.gate_*`` defaults come from measurement: 100-200 LFW identities, the second photo of
each placed into a 640x480 scene (:mod:`rfr.tools.degrade`), detected, aligned and searched with FaceNet
(casia-webface) against the aligned first photos (rank-1 over 200 identities):

==========  ====  ====  ====  ====  ====  ====  ====
face px     16    24    32    40    48    64    80
==========  ====  ====  ====  ====  ====  ====  ====
clean       0.59  0.94  0.94  0.99  0.99  0.99  0.99
mild        0.01  0.25  0.66  0.82  0.91  0.96  0.98
hard        0.00  0.01  0.04  0.09  0.20  0.50  0.65
==========  ====  ====  ====  ====  ====  ====  ====

* ``gate_min_face_px`` 32: below it even mild degradation leaves rank-1 under 0.3.
* ``gate_min_score`` 0.6: passes 99 % of mild faces of 32 px and up (median score 0.91-0.95) and rejects
  12-23 % of the junk sets below.
* ``gate_min_sharpness`` 150 (see :func:`sharpness`; medians: clean 32/80 px 1013/2105, mild 32/40/48/80/120 px
  306/432/561/977/1134, hard 40/64/80 px 133/250/290; junk sets with rank-1 0.03-0.15: blur sigma 3 at 48 px
  110, sigma 5 at 80 px 116, dark + noise + JPEG 25 at 48 px 142): passes 90 % of mild 32 px faces, 99 % of
  mild 40 px and larger and of clean ones, and rejects 71 %, 75 %, 55 % and 59 % (hard 40 px) of the junk sets.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import numpy.typing as npt

from rfr.core.reasons import Reason
from rfr.core.schemas import FaceQuality
from rfr.core.settings import DetectSettings
from rfr.face.detector import Detection, Point

SHARPNESS_SCALE_PX = 32
"""Side of the square the aligned crop is reduced to before its Laplacian variance is taken."""

# Pose thresholds, from 400 LFW photos (MediaPipe keypoints): they reject only extreme poses. With the nose
# tip about 0.6 inter-ocular distances in front of the eyes, the nose position between the eyes is roughly
# 0.5 + 0.6 * tan(yaw), so the span limits sit near 45 degrees of yaw.
NOSE_SPAN = (-0.1, 1.1)
"""Allowed nose-tip position between the eyes (0 = right eye, 1 = left eye) once the eye line is level
(LFW: median 0.51, 5-95 % 0.21-0.80, 0.5-99.5 % -0.02-1.04)."""

MIN_EYES_OVER_BOX = 0.22
"""Smallest inter-ocular distance over box width (LFW: median 0.415, 0.5 % 0.265, min 0.229; ~60 deg yaw)."""

MAX_EYE_MOUTH_OVER_EYES = 2.0
"""Largest eye-line-to-mouth distance over inter-ocular distance (LFW: median 1.09, 99.5 % 1.65, max 1.99)."""


def sharpness(crop_rgb: npt.NDArray[np.uint8]) -> float:
    """Sharpness: variance of the Laplacian of the grey aligned crop (HxWx3 uint8 RGB), area-downsampled to
    32x32 first. Higher is sharper; 0.0 for a flat crop. Unitless (grey levels squared).

    Seen at 160x160, the value mostly measures how much the crop was upscaled: a clean 32 px face and a
    badly blurred 80 px one score alike. At 32x32, about the resolution of the smallest face the gate
    accepts, it measures detail that faces of every accepted size could have, so it tells mild from junk.
    """
    grey = cv2.cvtColor(crop_rgb, cv2.COLOR_RGB2GRAY)
    small = cv2.resize(grey, (SHARPNESS_SCALE_PX, SHARPNESS_SCALE_PX), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(small, cv2.CV_64F).var())


def eye_distance(keypoints: tuple[Point, ...]) -> float:
    """Distance between the two eye keypoints, in pixels (0 when the keypoints are missing)."""
    if len(keypoints) < 2:
        return 0.0
    (rx, ry), (lx, ly) = keypoints[0], keypoints[1]
    return math.hypot(lx - rx, ly - ry)


def _levelled(keypoints: tuple[Point, ...]) -> npt.NDArray[np.float64]:
    """Keypoints rotated about the right eye so the eye line is horizontal and points along +x."""
    pts = np.asarray(keypoints, dtype=np.float64)
    dx, dy = pts[1] - pts[0]
    angle = math.atan2(dy, dx)
    rot = np.array([[math.cos(-angle), -math.sin(-angle)], [math.sin(-angle), math.cos(-angle)]])
    return np.asarray((pts - pts[0]) @ rot.T, dtype=np.float64)


def pose_ok(detection: Detection) -> bool:
    """Landmark sanity: eyes above nose above mouth, nose between the eyes, no extreme yaw.

    Judged after levelling the eye line, so in-plane roll (which alignment removes) never fails it, on the
    detection's own keypoints (:attr:`Detection.gate_points`), not those measured again for alignment.
    """
    kp = detection.gate_points
    iod = eye_distance(kp)
    if len(kp) < 4 or iod <= 0.0:
        return False
    pts = _levelled(kp)
    eye_y, nose, mouth = 0.0, pts[2], pts[3]
    if not eye_y < nose[1] < mouth[1]:
        return False
    span = nose[0] / iod
    if not NOSE_SPAN[0] <= span <= NOSE_SPAN[1]:
        return False
    box_w = detection.box.width
    if box_w > 0 and iod / box_w < MIN_EYES_OVER_BOX:
        return False
    return bool(mouth[1] / iod <= MAX_EYE_MOUTH_OVER_EYES)


def assess(detection: Detection, crop_rgb: npt.NDArray[np.uint8]) -> FaceQuality:
    """Quality of one detected face; ``crop_rgb`` is its aligned crop (see :func:`align.align_face`).

    ``face_px`` is the detector's box width in the original image (the face-width convention of the
    degradation generator and the recall measurements).
    """
    return FaceQuality(
        face_px=float(detection.box.width),
        score=float(detection.score),
        sharpness=sharpness(crop_rgb),
        eye_distance_px=eye_distance(detection.gate_points),
        pose_ok=pose_ok(detection),
    )


def gate(quality: FaceQuality, settings: DetectSettings) -> str | None:
    """The first reason to reject a face (size, score, pose, sharpness), or None when it may be searched."""
    if quality.face_px < settings.gate_min_face_px:
        return Reason.TOO_SMALL
    if quality.score < settings.gate_min_score:
        return Reason.LOW_SCORE
    if not quality.pose_ok:
        return Reason.BAD_POSE
    if quality.sharpness < settings.gate_min_sharpness:
        return Reason.BLURRY
    return None
