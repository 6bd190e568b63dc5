"""The fast detector against the reference, with the real BlazeFace model.

- Same inputs: on 128x128 images (one network call each) LiteRT's outputs, decoded with rfr/face/blazeface.py,
  give MediaPipe Tasks' own detections: the same faces, boxes IoU >= 0.9, keypoints within 2 px at 128 px.
- The PyTorch port (the GPU path, run here on the CPU) gives LiteRT's outputs at several input sizes.
- Whole scenes: the fast pyramid finds at least the faces the tile pyramid finds, as close to the true box.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from support.faces import first_photos

from rfr.core.settings import DetectSettings
from rfr.face.blazeface import decode, weighted_nms
from rfr.face.detector import MediaPipeDetector, Tile
from rfr.face.fast_detector import BlazeFaceDetector
from rfr.face.runners import LiteRTRunner, make_detector
from rfr.tools.degrade import place_in_scene

pytestmark = pytest.mark.timeout(300)
SEED = 11


@pytest.fixture(scope="module")
def model_path(detector_model: Path) -> Path:
    return detector_model


@pytest.fixture(scope="module")
def reference(model_path: Path) -> Iterator[MediaPipeDetector]:
    with MediaPipeDetector(model_path, DetectSettings()) as det:
        yield det


@pytest.fixture(scope="module")
def photos(lfw_dir: Path) -> list[npt.NDArray[np.uint8]]:
    return first_photos(lfw_dir, 24, SEED)


def _inputs(photos: list[npt.NDArray[np.uint8]]) -> list[npt.NDArray[np.uint8]]:
    """128x128 model inputs: each photo scaled whole, and a shifted, smaller copy on grey (faces ~20-70 px)."""
    out = []
    for k, photo in enumerate(photos):
        out.append(np.ascontiguousarray(cv2.resize(photo, (128, 128), interpolation=cv2.INTER_AREA), dtype=np.uint8))
        side = 40 + (k * 7) % 60
        small = cv2.resize(photo, (side, side), interpolation=cv2.INTER_AREA)
        canvas = np.full((128, 128, 3), 120, np.uint8)
        x, y = (k * 13) % (128 - side), (k * 29) % (128 - side)
        canvas[y : y + side, x : x + side] = small
        out.append(canvas)
    return out


def test_litert_outputs_decode_to_mediapipes_detections(model_path: Path, reference: MediaPipeDetector,
                                                        photos: list[npt.NDArray[np.uint8]]) -> None:
    runner = LiteRTRunner(model_path)
    settings = DetectSettings()
    compared = 0
    for image in _inputs(photos):
        regressors, logits = runner.run((image.astype(np.float32) * (2 / 255) - 1)[None])
        mine = weighted_nms(decode(regressors[0], logits[0], 128, 128, settings.score_threshold), settings.nms_iou)
        theirs = reference._run(image, Tile(0, 0, 128, 128))
        assert len(mine) == len(theirs), "not the same faces"
        for det in theirs:
            x0, y0, x1, y1 = det.box.x, det.box.y, det.box.x + det.box.width, det.box.y + det.box.height
            best = int(np.argmin(np.abs(mine.scores - det.score)))
            assert mine.scores[best] == pytest.approx(det.score, abs=1e-3)
            assert np.abs(mine.keypoints[best] - np.asarray(det.keypoints)).max() <= 2.0
            if mine.boxes[best].min() < 0 or mine.boxes[best].max() > 128:
                continue  # Tasks moves a box that leaves the image inside it, keeping its size
            # Tasks truncates origin and size to whole pixels apart: each edge within 2 px, IoU >= 0.9 from 30 px
            assert np.abs(mine.boxes[best] - np.asarray([x0, y0, x1, y1])).max() <= 2.0
            if det.box.width >= 30:
                assert _iou((x0, y0, x1, y1), tuple(mine.boxes[best])) >= 0.9
            compared += 1
    assert compared >= len(photos)


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


@pytest.mark.parametrize("size", [(128, 128), (160, 272), (608, 1088)])
def test_torch_port_reproduces_litert(model_path: Path, size: tuple[int, int]) -> None:
    from rfr.face.blazeface_torch import TorchRunner

    batch = np.random.default_rng(SEED).uniform(-1, 1, (2, *size, 3)).astype(np.float32)
    want_reg, want_logits = LiteRTRunner(model_path).run(batch)
    got_reg, got_logits = TorchRunner.from_tflite(model_path, "cpu").run(batch)
    assert got_reg.shape == want_reg.shape and got_logits.shape == want_logits.shape
    np.testing.assert_allclose(got_reg, want_reg, atol=2e-3)
    np.testing.assert_allclose(got_logits, want_logits, atol=2e-3)


def test_scenes_same_recall_and_accuracy_as_the_tile_pyramid(model_dir: Path, model_path: Path,
                                                             reference: MediaPipeDetector,
                                                             photos: list[npt.NDArray[np.uint8]]) -> None:
    fast = make_detector(DetectSettings(), model_dir)
    assert isinstance(fast, BlazeFaceDetector)
    rng = np.random.default_rng(SEED)
    found = {"fast": 0, "reference": 0}
    truth_iou: dict[str, list[float]] = {"fast": [], "reference": []}
    for k, photo in enumerate(photos):
        face_px = (32, 48, 80, 150)[k % 4]
        scene, truth = place_in_scene(photo, face_px, (1280, 720), "mild", rng)
        for name, det in (("fast", fast), ("reference", reference)):
            hits = [d for d in det.detect(scene) if d.box.iou(truth) >= 0.3]
            found[name] += bool(hits)
            if hits:
                truth_iou[name].append(max(d.box.iou(truth) for d in hits))
    assert found["fast"] >= found["reference"] >= len(photos) - 2
    assert np.mean(truth_iou["fast"]) >= np.mean(truth_iou["reference"]) - 0.03


def test_torch_pyramid_batch_finds_what_litert_finds(model_dir: Path, model_path: Path,
                                                     photos: list[npt.NDArray[np.uint8]]) -> None:
    """The GPU path's own level scaling and candidate selection (run here on the CPU) against the default."""
    from rfr.face.blazeface_torch import TorchRunner

    rng = np.random.default_rng(SEED + 1)
    scenes = [place_in_scene(photo, (40, 90)[k % 2], (960, 540), "mild", rng)[0] for k, photo in enumerate(photos[:6])]
    litert = make_detector(DetectSettings(), model_dir)
    torch_det = BlazeFaceDetector(TorchRunner.from_tflite(model_path, "cpu"), DetectSettings())
    gate = DetectSettings().gate_min_score  # weaker boxes may fall either side of the 0.5 cut: resizing differs
    compared = 0
    for want, got in zip([litert.detect(s) for s in scenes], torch_det.detect_batch(scenes), strict=True):
        for mine, theirs in ((want, got), (got, want)):
            for a in (d for d in mine if d.score >= gate):
                assert max((a.box.iou(b.box) for b in theirs), default=0.0) >= 0.9
                compared += 1
    assert compared >= len(scenes)
