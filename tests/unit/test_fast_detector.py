"""The fast detector's arithmetic without a model: anchors, decoding, weighted NMS, containment, pyramid levels."""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt
import pytest

from rfr.core.geometry import Box
from rfr.core.settings import DetectSettings
from rfr.face.blazeface import anchor_centres, anchor_count, decode, logit_cut, weighted_nms
from rfr.face.detector import Detection, nms
from rfr.face.fast_detector import (
    LARGE_FACE_MIN_SCORE,
    LEVEL_GROWTH,
    MODEL_FACE_PX,
    BlazeFaceDetector,
    first_scale,
    plan_levels,
)

Floats = npt.NDArray[np.float32]


def test_anchors_at_128_are_mediapipes_896_in_grid_order() -> None:
    centres = anchor_centres(128, 128)
    assert centres.shape == (896, 2) == (anchor_count(128, 128), 2)
    # stride 8 first, 2 anchors per cell, row-major; then stride 16 with 6 per cell
    assert centres[0].tolist() == centres[1].tolist() == [4.0, 4.0]
    assert centres[2].tolist() == [12.0, 4.0]
    assert centres[32].tolist() == [4.0, 12.0]  # second row of the 16x16 grid
    assert centres[512].tolist() == centres[517].tolist() == [8.0, 8.0]
    assert centres[518].tolist() == [24.0, 8.0]


def test_anchors_for_any_multiple_of_16() -> None:
    assert anchor_centres(608, 1088).shape[0] == 76 * 136 * 2 + 38 * 68 * 6 == 36176
    with pytest.raises(ValueError, match="multiples of 16"):
        anchor_centres(100, 128)


def _outputs(height: int, width: int, hits: dict[int, tuple[float, list[float]]]) -> tuple[Floats, Floats]:
    n = anchor_count(height, width)
    regressors = np.zeros((n, 16), np.float32)
    logits = np.full(n, -10.0, np.float32)
    for anchor, (logit, values) in hits.items():
        logits[anchor] = logit
        regressors[anchor, : len(values)] = values
    return regressors, logits


def test_decode_in_input_pixels_and_score_cut() -> None:
    reg, logits = _outputs(128, 128, {2: (2.0, [1.0, -2.0, 20.0, 24.0, -5.0, -6.0]), 3: (-1.0, [0, 0, 10, 10])})
    faces = decode(reg, logits, 128, 128, 0.5)
    assert len(faces) == 1  # sigmoid(-1) = 0.27 is under 0.5
    assert faces.boxes[0].tolist() == pytest.approx([13.0 - 10.0, 2.0 - 12.0, 13.0 + 10.0, 2.0 + 12.0])
    assert faces.keypoints[0, 0].tolist() == pytest.approx([12.0 - 5.0, 4.0 - 6.0])
    assert faces.scores[0] == pytest.approx(1 / (1 + np.exp(-2.0)))
    assert logit_cut(0.5) == 0.0 and logit_cut(0.0) == -np.inf


def test_decode_of_selected_anchors_matches_the_full_decode() -> None:
    reg, logits = _outputs(128, 256, {7: (3.0, [1, 2, 30, 30]), 900: (1.0, [0, 0, 40, 40])})
    full = decode(reg, logits, 128, 256, 0.5)
    index = np.array([7, 900], np.int64)
    picked = decode(reg[index], logits[index], 128, 256, 0.5, index)
    assert np.array_equal(full.boxes, picked.boxes) and np.array_equal(full.scores, picked.scores)


def test_weighted_nms_averages_the_overlapping_cluster_by_score() -> None:
    reg, logits = _outputs(128, 128, {
        100: (4.0, [0, 0, 40, 40]), 101: (0.0, [4, 0, 40, 40]),  # same cell, overlapping: one face
        600: (2.0, [0, 0, 20, 20]),  # far away: another
    })
    faces = weighted_nms(decode(reg, logits, 128, 128, 0.4), 0.3)
    assert len(faces) == 2
    s1, s2 = 1 / (1 + np.exp(-4.0)), 0.5
    x0 = (s1 * (reg_x0 := anchor_centres(128, 128)[100][0] - 20) + s2 * (reg_x0 + 4)) / (s1 + s2)
    assert faces.boxes[0, 0] == pytest.approx(x0, rel=1e-5)
    assert faces.scores[0] == pytest.approx(s1)  # the best one's score


def _det(x: float, y: float, w: float, score: float) -> Detection:
    return Detection(box=Box(x, y, w, w), score=score, keypoints=())


def test_nms_drops_a_box_mostly_inside_a_stronger_one() -> None:
    face = _det(100, 100, 50, 0.95)
    spurious = _det(75, 80, 102, 0.62)  # around the face: IoU 0.24, so IoU alone keeps both
    assert face.box.iou(spurious.box) < 0.3
    assert nms([spurious, face], 0.3) == [face, spurious]  # containment off
    assert nms([spurious, face], 0.3, containment=0.7) == [face]
    neighbour = _det(140, 100, 50, 0.9)  # side by side, overlapping a little: a different face
    assert nms([face, neighbour], 0.3, containment=0.7) == [face, neighbour]
    adult, child = _det(100, 100, 186, 0.95), _det(165, 225, 60, 0.85)  # a child's face at an adult's chin
    assert child.box.iou(adult.box) < 0.3 and adult.box.iou(child.box) < 0.3
    assert nms([child, adult], 0.3, containment=0.7) == [adult, child]  # the smaller, weaker face stays
    stronger_child = _det(165, 225, 60, 0.99)
    assert nms([stronger_child, adult], 0.3, containment=0.7) == [stronger_child, adult]  # so does the adult


def test_levels_of_a_1080p_frame() -> None:
    scale0 = first_scale("auto", DetectSettings())
    assert scale0 is not None and scale0 == pytest.approx(MODEL_FACE_PX / 32)
    levels = plan_levels(1920, 1080, scale0)
    assert [(p.input_w, p.input_h) for lv in levels for p in lv.parts] == [(1088, 608), (288, 160), (128, 128)]
    assert levels[1].scale == pytest.approx(scale0 / LEVEL_GROWTH)
    assert levels[-1].max_face is None and all(lv.max_face for lv in levels[:-1])
    assert [(p.input_w, p.input_h) for lv in plan_levels(1920, 1080, first_scale("full", DetectSettings()))
            for p in lv.parts] == [(128, 128)]
    with pytest.raises(ValueError, match="unknown detection strategy"):
        first_scale("tiles7", DetectSettings())


class FakeRunner:
    """Puts one face of ``width`` input pixels with ``logit`` at the centre of every input; records shapes."""

    name = "fake"

    def __init__(self, width: float, logit: float, keypoint: tuple[float, float] = (0.0, 0.0)) -> None:
        self.width, self.logit, self.keypoint = width, logit, keypoint
        self.shapes: list[tuple[int, ...]] = []

    def run(self, batch: Floats) -> tuple[Floats, Floats]:
        self.shapes.append(batch.shape)
        n, h, w = batch.shape[:3]
        centres = anchor_centres(h, w)
        i = int(np.argmin(np.abs(centres - [w / 2, h / 2]).sum(axis=1)))
        reg, logits = _outputs(h, w, {i: (self.logit, [0, 0, self.width, self.width, *self.keypoint])})
        return np.repeat(reg[None], n, 0), np.repeat(logits[None], n, 0)


def test_a_large_weak_box_at_a_fine_level_is_dropped_a_strong_one_kept() -> None:
    frame = np.zeros((480, 640, 3), np.uint8)
    plain = DetectSettings(refine_keypoints=False)
    weak = BlazeFaceDetector(FakeRunner(60.0, 0.2), plain)  # score 0.55, 60 px at the level
    strong = BlazeFaceDetector(FakeRunner(60.0, 3.0), plain)  # score 0.95
    assert 1 / (1 + np.exp(-0.2)) < LARGE_FACE_MIN_SCORE
    # only the last level (the letterboxed frame) keeps the weak box; the strong one is found at every level
    assert len(weak.detect(frame)) == 1
    widths = sorted(d.box.width for d in nms(strong.detect(frame), 1.0))
    assert widths[0] == pytest.approx(60 * 32 / MODEL_FACE_PX, rel=0.02)


def test_detect_batch_runs_each_size_once_per_level() -> None:
    runner = FakeRunner(30.0, 3.0)
    det = BlazeFaceDetector(runner, DetectSettings(refine_keypoints=False))
    frames = [np.zeros((480, 640, 3), np.uint8), np.zeros((720, 1280, 3), np.uint8), np.zeros((480, 640, 3), np.uint8)]
    found = det.detect_batch(frames)
    assert len(found) == 3 and all(found)
    assert sorted(s[0] for s in runner.shapes) == [1] * len(det.levels(1280, 720)) + [2] * len(det.levels(640, 480))
    assert det.model_calls == len(runner.shapes)
    with pytest.raises(ValueError, match="RGB uint8"):
        det.detect(np.zeros((10, 10), np.uint8))


def test_a_large_level_runs_as_bounded_overlapping_parts() -> None:
    from rfr.face.fast_detector import MAX_INPUT_SIDE, PART_OVERLAP, parts_of

    width, height = 4110, 3080  # level 0 of a 40 MP still
    parts = parts_of(width, height)
    assert len(parts) > 1
    assert all(p.input_w <= MAX_INPUT_SIDE + 32 and p.input_h <= MAX_INPUT_SIDE + 32 for p in parts)
    covered = np.zeros((height, width), bool)
    for p in parts:
        covered[p.y : p.y + p.h, p.x : p.x + p.w] = True
    assert covered.all()
    xs = sorted({(p.x, p.w) for p in parts})
    assert all(a + wa - b >= PART_OVERLAP for (a, wa), (b, _) in itertools.pairwise(xs))
    assert parts_of(1075, 605) == parts_of(1075, 605)[:1]  # a 1080p frame's level 0: one input


def test_refinement_measures_keypoints_again_on_a_view_at_the_models_best_scale() -> None:
    from rfr.face.refine import REFINE_FACE_FRACTION

    frame = np.zeros((480, 640, 3), np.uint8)
    first = Detection(box=Box(300.0, 200.0, 40.0, 40.0), score=0.9, keypoints=((310.0, 210.0),))
    # the view is 100 px of image per 128 input px; the fake finds the face centred there, 0.4 of the input wide,
    # its first keypoint 8 input px right of and 4 above the centre
    runner = FakeRunner(REFINE_FACE_FRACTION * 128, 3.0, keypoint=(8.0, -4.0))
    det = BlazeFaceDetector(runner, DetectSettings())
    (refined,) = det._refine(frame, [first], finest=0.56)  # 22 px at level 0
    assert (refined.score, refined.box) == (first.score, first.box)  # what the gate and recall read stays
    centres = anchor_centres(128, 128)
    ax, ay = centres[int(np.argmin(np.abs(centres - [64, 64]).sum(axis=1)))]  # where the fake puts the face
    view_x, view_y = 320.0 - 50.0, 220.0 - 50.0  # the 100 px view around the face centre (320, 220)
    assert refined.keypoints[0] == pytest.approx((view_x + (ax + 8) * 100 / 128, view_y + (ay - 4) * 100 / 128))
    assert refined.gate_keypoints == first.keypoints and refined.gate_points == first.keypoints  # the gate's stay
    assert runner.shapes[-1] == (1, 128, 128, 3)
    missing = BlazeFaceDetector(FakeRunner(REFINE_FACE_FRACTION * 128, -5.0), DetectSettings())
    assert missing._refine(frame, [first], finest=0.56) == [first]  # not found again: the first measurement stays
    calls = det.model_calls
    assert det._refine(frame, [first], finest=1.5) == [first]  # 60 px at the finest level: seen well already
    assert det.model_calls == calls
