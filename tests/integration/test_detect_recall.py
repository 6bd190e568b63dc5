"""Detection recall with the real BlazeFace model on the labelled photos and on CCTV-like versions of them.

A fixed seeded sample of 40 LFW identities: the photos as they are, then each one pasted into a 1920x1080
synthetic scene at several face widths with the ``mild`` degradation, detected with the default settings
(``auto`` strategy from ``min_face_px`` = 32). Recall by face width is printed (run with ``-s``) and held
above floors set from measurement (``python -m benchmarks.bench_detect`` prints the full table per strategy).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from support.faces import first_photos

from rfr.core.geometry import Box
from rfr.core.settings import DetectSettings
from rfr.face.align import align_face
from rfr.face.detector import Detection, Detector, close_detector, iou
from rfr.face.runners import make_detector
from rfr.tools.degrade import LFW_FACE_FRACTION, SCENE_1080P, place_in_scene, synthetic_background

pytestmark = pytest.mark.timeout(300)

IDENTITIES = 40
SEED = 20240601
FACE_SIZES = (32, 48, 64, 80, 120)
# Measured on this sample (mild, 1080p, auto): 0.975 at 32 px, 1.0 from 48 px, 0.08 false detections per frame;
# the benchmark's own sample gives 1.0 at 32 px and 0.6-0.8 at 24 px. The floors leave room for a miss or two
# in 40 at the small end, where recall falls off steeply.
RECALL_FLOORS = {32: 0.9, 48: 0.95, 64: 0.95, 80: 0.95, 120: 0.95}
MAX_FALSE_PER_FRAME = 0.25


@pytest.fixture(scope="module", params=["litert", "mediapipe"])
def detector(request: pytest.FixtureRequest, detector_model: Path, model_dir: Path) -> Iterator[Detector]:
    """The default detector and the reference (MediaPipe Tasks over tiles), each held to the same floors."""
    det = make_detector(DetectSettings(detector=request.param), model_dir)
    yield det
    close_detector(det)


@pytest.fixture(scope="module")
def photos(lfw_dir: Path) -> list[npt.NDArray[np.uint8]]:
    return first_photos(lfw_dir, IDENTITIES, SEED)


def matches(truth: Box, found: list[Detection]) -> list[Detection]:
    t = (truth.x, truth.y, truth.width, truth.height)
    return [d for d in found if iou(t, d.box) >= 0.3]


def near_photo_centre(d: Detection, side: int) -> bool:
    """LFW photos are centred on the face (box centre at about (0.50, 0.55) of the photo)."""
    cx, cy = d.box[0] + d.box[2] / 2, d.box[1] + d.box[3] / 2
    return abs(cx - 0.5 * side) < 0.17 * side and abs(cy - 0.55 * side) < 0.17 * side


def test_faces_found_in_the_photos(detector: Detector, photos: list[npt.NDArray[np.uint8]]) -> None:
    widths = []
    for img in photos:
        found = detector.detect(img)
        central = [d for d in found if near_photo_centre(d, img.shape[1])]
        assert central, "no face near the centre of an LFW photo"
        widths.append(max(d.box[2] for d in central) / img.shape[1])
        best = max(central, key=lambda d: d.score)
        assert len(best.keypoints) == 6
        crop = align_face(img, best)
        assert crop.shape == (160, 160, 3)
    # the generator's face-width factor matches what the detector measures
    assert float(np.median(widths)) == pytest.approx(LFW_FACE_FRACTION, abs=0.03)


@dataclass(frozen=True)
class CctvResult:
    recall: dict[int, float]
    false_per_frame: float


def away_from_photo(d: Detection, truth: Box) -> bool:
    """Outside the pasted photo (which may show other real people)."""
    half = 0.5 / LFW_FACE_FRACTION * truth.width
    cx, cy = truth.x + truth.width / 2, truth.y + truth.height / 2
    return abs(d.box[0] + d.box[2] / 2 - cx) > half or abs(d.box[1] + d.box[3] / 2 - cy) > half


@pytest.fixture(scope="module")
def cctv(detector: Detector, photos: list[npt.NDArray[np.uint8]]) -> CctvResult:
    rng = np.random.default_rng(SEED)
    backgrounds = [synthetic_background(SCENE_1080P, rng) for _ in range(4)]
    recall: dict[int, float] = {}
    false = frames = 0
    for face_px in FACE_SIZES:
        hits = 0
        for i, photo in enumerate(photos):
            scene, truth = place_in_scene(photo, face_px, SCENE_1080P, "mild", rng, background=backgrounds[i % 4])
            found = detector.detect(scene)
            hit = matches(truth, found)
            hits += bool(hit)
            false += sum(1 for d in found if d not in hit and away_from_photo(d, truth))
            frames += 1
        recall[face_px] = hits / len(photos)
    result = CctvResult(recall, false / frames)
    print(f"\ndetect recall, 1920x1080 mild, auto, {type(detector).__name__}: {result.recall}, "
          f"false/frame {result.false_per_frame:.3f}")
    return result


@pytest.mark.parametrize("face_px", FACE_SIZES)
def test_cctv_recall_by_face_size(cctv: CctvResult, face_px: int) -> None:
    assert cctv.recall[face_px] >= RECALL_FLOORS[face_px]


def test_cctv_false_detections_are_rare(cctv: CctvResult) -> None:
    assert cctv.false_per_frame <= MAX_FALSE_PER_FRAME
