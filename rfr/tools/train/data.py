"""Training faces for the low-resolution fine-tune and their synthetic CCTV views, fresh for every step.

A :class:`FaceSet` holds labelled photos (RGB uint8, as read) with one detection each (MediaPipe box and
keypoints on the full photo, found once and cached as JSON). :func:`clean_crop` is the product's aligned crop of
the photo (:func:`rfr.face.align.align_face`, the detect service's margin); :func:`lowres_sample` draws a
:class:`Recipe` from a ``numpy.random.Generator`` and makes the crop the product would get of the same face
seen small by a poor camera: the photo shrunk so the face is 24-64 px wide (``INTER_AREA``, as optics and a
sensor do), then :func:`rfr.tools.degrade.apply_degradation` (blur, exposure, noise, JPEG), sometimes grey,
then aligned from keypoints jittered as a detector's are on a small face, upsampled to 160 x 160 by the same
warp as in production. Everything random comes from the generator passed in, so a seed replays a run.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from rfr.core.geometry import Box
from rfr.face.align import align_face
from rfr.face.detector import Detection, Detector, close_detector
from rfr.tools.degrade import Degradation, apply_degradation, place_in_scene

logger = logging.getLogger(__name__)

Image = npt.NDArray[np.uint8]

CROP_SIZE = 160
CROP_MARGIN = 0.2  # DetectSettings.crop_margin's default: the crops the services make


@dataclass(frozen=True)
class Recipe:
    """Ranges of the synthetic degradation, each drawn uniformly per sample (the issue #17 brief: 24-64 px,
    blur, noise, JPEG, gamma, greyscale). ``full_res`` of the samples keep the photo's own resolution (with
    the same camera degradations), so the model still sees sharp faces and clean crops keep their embedding."""

    face_px: tuple[float, float] = (24.0, 64.0)
    full_res: float = 0.15
    blur_sigma: tuple[float, float] = (0.0, 1.5)
    noise_sigma: tuple[float, float] = (0.0, 10.0)
    jpeg_quality: tuple[int, int] = (30, 95)
    brightness: tuple[float, float] = (0.45, 1.15)
    gamma: tuple[float, float] = (0.7, 1.8)
    greyscale: float = 0.15
    keypoint_jitter: float = 0.03
    """Standard deviation of each keypoint's offset, as a fraction of the face width."""
    scene: float = 0.0
    """Fraction of the small samples made as ``rfr eval`` makes its CCTV probes: the face pasted into a scene
    (:func:`rfr.tools.degrade.place_in_scene`) with a rotation and a perspective warp, and found and aligned by
    the product's detector (:func:`scene_crop`); the others (and any the detector misses) are aligned from the
    photo's own keypoints, jittered. 0 (the ``casia-webface-lowres-v1`` recipe) by default: 0.7 was measured and
    not kept (docs/eval/README.md, "The low-resolution fine-tune")."""
    rotation_deg: float = 10.0
    """Largest rotation of a scene sample, degrees (the ``mild`` level of rfr/tools/degrade.py: 8)."""
    perspective: float = 0.05
    """Largest corner offset of a scene sample's perspective warp, as a fraction of the face width (mild: 0.04)."""


@dataclass(frozen=True)
class FaceSet:
    """Labelled photos with one detection each; ``labels[i]`` indexes ``identities``."""

    keys: tuple[str, ...]
    identities: tuple[str, ...]
    labels: npt.NDArray[np.int64]
    images: tuple[Image, ...]
    detections: tuple[Detection, ...]

    def __len__(self) -> int:
        return len(self.keys)


def read_rgb(path: Path) -> Image:
    """The photo at ``path`` as RGB uint8; ``ValueError`` when it cannot be decoded."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path} is not a readable image")
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)


def _to_json(d: Detection) -> list[float]:
    return [*d.box, d.score, *(v for point in d.keypoints for v in point)]


def _from_json(values: list[float]) -> Detection:
    points = values[5:]
    keypoints = tuple((points[i], points[i + 1]) for i in range(0, len(points), 2))
    return Detection(Box.of(values[:4]), values[4], keypoints)


def detect_photos(photos: dict[str, Image], cache: Path | None, model_dir: Path) -> dict[str, Detection]:
    """The largest face MediaPipe finds in each photo (key -> detection; photos without a face are left out).

    ``cache`` (a JSON file) keeps detections between runs; keys already in it are not detected again.
    """
    known: dict[str, list[float]] = json.loads(cache.read_text()) if cache is not None and cache.is_file() else {}
    missing = [k for k in photos if k not in known]
    if missing:
        from rfr.core.settings import DetectSettings
        from rfr.face.runners import make_detector

        # MediaPipe, the reference detector, on the whole photo: the keypoints every crop is aligned from.
        detector = make_detector(DetectSettings(detector="mediapipe"), model_dir, strategy="full")
        try:
            for key in missing:
                found = detector.detect(photos[key])
                known[key] = _to_json(max(found, key=lambda d: d.box.width)) if found else []
        finally:
            close_detector(detector)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(known, sort_keys=True))
    return {k: _from_json(known[k]) for k in photos if known[k]}


def load_faceset(groups: dict[str, list[Path]], cache: Path | None, model_dir: Path) -> FaceSet:
    """Read every photo of ``groups`` (identity -> photos, in order) and detect its face (see
    :func:`detect_photos`); photos without a detected face are dropped and counted in the log."""
    photos = {f"{identity}/{p.name}": read_rgb(p) for identity, paths in groups.items() for p in paths}
    found = detect_photos(photos, cache, model_dir)
    if len(found) < len(photos):
        logger.info("%d of %d photos had no detected face and are left out", len(photos) - len(found), len(photos))
    identities = tuple(sorted(groups))
    index = {name: i for i, name in enumerate(identities)}
    keys = tuple(k for k in photos if k in found)
    return FaceSet(
        keys=keys,
        identities=identities,
        labels=np.array([index[k.split("/", 1)[0]] for k in keys], dtype=np.int64),
        images=tuple(photos[k] for k in keys),
        detections=tuple(found[k] for k in keys),
    )


def clean_crop(image: Image, detection: Detection) -> Image:
    """The product's aligned 160 x 160 crop of the photo at its own resolution."""
    return align_face(image, detection, CROP_SIZE, CROP_MARGIN)


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def draw_degradation(rng: np.random.Generator, recipe: Recipe) -> Degradation:
    """One camera (blur, exposure, noise, JPEG) from the recipe's ranges."""
    return Degradation(
        "train",
        blur_sigma=_uniform(rng, recipe.blur_sigma),
        noise_sigma=_uniform(rng, recipe.noise_sigma),
        jpeg_quality=int(rng.integers(recipe.jpeg_quality[0], recipe.jpeg_quality[1] + 1)),
        brightness=_uniform(rng, recipe.brightness),
        gamma=_uniform(rng, recipe.gamma),
    )


def shrink(image: Image, detection: Detection, face_px: float) -> tuple[Image, Detection]:
    """The photo resized so the detected face is ``face_px`` wide, and the detection moved with it."""
    scale = face_px / max(detection.box.width, 1.0)
    h, w = image.shape[:2]
    size = (max(2, round(w * scale)), max(2, round(h * scale)))
    sx, sy = size[0] / w, size[1] / h
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    small = np.asarray(cv2.resize(image, size, interpolation=interp), dtype=np.uint8)
    box = detection.box
    moved = Detection(
        Box((box.x + 0.5) * sx - 0.5, (box.y + 0.5) * sy - 0.5, box.width * sx, box.height * sy),
        detection.score,
        tuple(((x + 0.5) * sx - 0.5, (y + 0.5) * sy - 0.5) for x, y in detection.keypoints),
    )
    return small, moved


def jitter(detection: Detection, sigma_px: float, rng: np.random.Generator) -> Detection:
    """The detection with each keypoint moved by a normal offset of ``sigma_px`` (a detector's noise)."""
    offsets = rng.normal(0.0, sigma_px, (len(detection.keypoints), 2))
    pairs = zip(detection.keypoints, offsets, strict=True)
    points = tuple((x + float(dx), y + float(dy)) for (x, y), (dx, dy) in pairs)
    return Detection(detection.box, detection.score, points)


def degrade_face(
    image: Image, detection: Detection, face_px: float | None, camera: Degradation, grey: bool,
    rng: np.random.Generator, keypoint_jitter: float = 0.0,
) -> Image:
    """The aligned crop of the face seen ``face_px`` wide (``None``: at the photo's size) through ``camera``."""
    small, moved = (image, detection) if face_px is None else shrink(image, detection, face_px)
    if grey:
        small = np.ascontiguousarray(np.repeat(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2))
    seen = apply_degradation(small, camera, rng)
    if keypoint_jitter > 0:
        moved = jitter(moved, keypoint_jitter * moved.box.width, rng)
    return align_face(seen, moved, CROP_SIZE, CROP_MARGIN)


SCENE_SIZE = (256, 256)
"""Scene of a scene sample: room for a 64 px face (a 156 px LFW-framed patch); the detector's pyramid scales
by the smallest face, not the frame, so a small scene sees a face as a 1080p one does."""
BACKGROUNDS = 64
"""Scene textures drawn once (seeded) and reused: drawing one costs more than the rest of a sample."""
_BACKGROUNDS: list[Image] = []


def scene_crop(image: Image, detection: Detection, face_px: float, camera: Degradation, grey: bool,
               rng: np.random.Generator, detector: Detector) -> Image | None:
    """The crop ``rfr eval`` would make of the face seen ``face_px`` wide through ``camera`` (its rotation and
    perspective included): framed like LFW, pasted in a :data:`SCENE_SIZE` scene, degraded, detected by
    ``detector`` and aligned from the detection nearest the true box; None when the detector misses it."""
    from rfr.tools.eval.scenes import background_pool, frame_like_lfw, offset_from_truth

    if not _BACKGROUNDS:
        _BACKGROUNDS.extend(background_pool(SCENE_SIZE, BACKGROUNDS, seed=0))
    photo = frame_like_lfw(image, detection.box)
    if grey:
        photo = np.ascontiguousarray(np.repeat(cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2))
    background = _BACKGROUNDS[int(rng.integers(len(_BACKGROUNDS)))]
    scene, truth = place_in_scene(photo, face_px, SCENE_SIZE, camera, rng, background=background)
    near = [d for d in detector.detect(scene) if offset_from_truth(d.box, truth) <= 0.5]
    if not near:
        return None
    return align_face(scene, min(near, key=lambda d: offset_from_truth(d.box, truth)), CROP_SIZE, CROP_MARGIN)


def lowres_sample(image: Image, detection: Detection, rng: np.random.Generator, recipe: Recipe,
                  detector: Detector | None = None) -> tuple[Image, str]:
    """One fresh synthetic CCTV crop of the face and how it was made: ``full_res``, ``keypoints`` (aligned from the
    photo's keypoints), ``scene`` (found by ``detector`` in a scene), or ``scene_missed`` (the detector missed it
    and the keypoint sample stands in; counted so that a run reports how often). Raises ``ValueError`` for a recipe
    with scene samples and no detector."""
    face_px = None if rng.random() < recipe.full_res else _uniform(rng, recipe.face_px)
    camera = draw_degradation(rng, recipe)
    grey = bool(rng.random() < recipe.greyscale)
    kind = "full_res" if face_px is None else "keypoints"
    if face_px is not None and recipe.scene > 0 and rng.random() < recipe.scene:
        if detector is None:
            raise ValueError("a recipe with scene samples needs a detector")
        warp = replace(camera, max_rotation_deg=recipe.rotation_deg, max_perspective=recipe.perspective)
        crop = scene_crop(image, detection, face_px, warp, grey, rng, detector)
        if crop is not None:
            return crop, "scene"
        kind = "scene_missed"
    return degrade_face(image, detection, face_px, camera, grey, rng, recipe.keypoint_jitter), kind
