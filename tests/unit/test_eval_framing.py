"""The eval's scenes are framed by one detector (the reference), so two detectors compared on a split see the
same pixels (issue 16: rank-1 of the fast detector against MediaPipe Tasks "on the same split")."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from rfr.core.geometry import Box
from rfr.core.settings import DetectSettings, Settings
from rfr.face.detector import Detection
from rfr.tools.eval import runner as eval_runner
from rfr.tools.eval.probes import ORIGINAL, Condition, ProbeRunner, StageTimes
from rfr.tools.eval.splits import CALIBRATION, Probe, Sample

KEYPOINTS = ((95.0, 110.0), (155.0, 110.0), (125.0, 140.0), (125.0, 165.0), (80.0, 120.0), (170.0, 120.0))


class BoxDetector:
    """Always finds one face at a fixed box (a fake: no model); counts its calls."""

    def __init__(self, box: Box) -> None:
        self.box = box
        self.calls = 0

    def detect(self, image: np.ndarray) -> list[Detection]:
        self.calls += 1
        return [Detection(self.box, 0.95, KEYPOINTS)]


@pytest.fixture
def probe(tmp_path: Path) -> Probe:
    rng = np.random.default_rng(7)
    photo = cv2.GaussianBlur(rng.integers(0, 255, (250, 250, 3), dtype=np.uint8), (0, 0), 3)
    path = tmp_path / "Someone" / "Someone_0001.png"
    path.parent.mkdir()
    assert cv2.imwrite(str(path), photo)
    return Probe(Sample("Someone", path), mated=True, half=CALIBRATION)


def _scene(detector: BoxDetector, framer: BoxDetector | None, probe: Probe) -> tuple[Box | None, bytes]:
    runner = ProbeRunner(detector, DetectSettings(gate_min_sharpness=0.0), None, None, "",  # type: ignore[arg-type]
                         {}, 1, framer=framer)
    runner.find(probe, Condition(ORIGINAL), StageTimes())
    made = runner._scene(probe, probe.sample.path.read_bytes(), Condition("clean", "clean", 48.0, (320, 240), 3))
    assert made is not None
    return runner.framing[probe.sample.sample_id], made[0]


def test_the_framer_frames_the_scene_whichever_detector_is_measured(probe: Probe) -> None:
    reference, other = Box(75.0, 80.0, 100.0, 100.0), Box(70.0, 78.0, 112.0, 108.0)
    framer = BoxDetector(reference)
    framing, scene = _scene(BoxDetector(other), framer, probe)
    assert framing == reference and framer.calls == 1
    framing_again, scene_again = _scene(BoxDetector(Box(90.0, 95.0, 80.0, 80.0)), BoxDetector(reference), probe)
    assert framing_again == reference and scene_again == scene


def test_without_a_framer_the_measured_detector_frames_its_own_scenes(probe: Probe) -> None:
    reference, other = Box(75.0, 80.0, 100.0, 100.0), Box(70.0, 78.0, 112.0, 108.0)
    framing, scene = _scene(BoxDetector(other), None, probe)
    assert framing == other
    _, framed_by_reference = _scene(BoxDetector(other), BoxDetector(reference), probe)
    assert scene != framed_by_reference


def test_the_reference_needs_no_framer_and_any_other_detector_gets_the_reference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[str] = []

    def make_detector(settings: DetectSettings, model_dir: Path) -> BoxDetector:
        made.append(settings.detector)
        return BoxDetector(Box(0, 0, 1, 1))

    monkeypatch.setattr("rfr.face.runners.make_detector", make_detector)
    with eval_runner.framing_detector(Settings(detect=DetectSettings(detector="mediapipe"))) as framer:
        assert framer is None
    with eval_runner.framing_detector(Settings(detect=DetectSettings(detector="litert"))) as framer:
        assert isinstance(framer, BoxDetector)
    assert made == ["mediapipe"]
