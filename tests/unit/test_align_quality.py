"""Unit tests for the detect core without the model: tiling, NMS, coordinate mapping, alignment, quality, gate."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from rfr.core.reasons import Reason
from rfr.core.settings import DetectSettings
from rfr.face import align, detector, quality
from rfr.face.detector import Detection, MediaPipeDetector

# --- helpers ------------------------------------------------------------------------------------------------

CROP = 160
MARGIN = 0.2


def template_crop_points(size: int = CROP, margin: float = MARGIN) -> npt.NDArray[np.float64]:
    """Where the four aligned keypoints must land in the crop."""
    pts = np.asarray(align.MTCNN_TEMPLATE, dtype=np.float64)
    return size * (pts + margin / 2) / (1 + margin)


def face_detection(centre: tuple[float, float], iod: float, roll_deg: float = 0.0, score: float = 0.9) -> Detection:
    """A frontal face's keypoints (template proportions) at ``centre`` with inter-ocular distance ``iod``."""
    unit = np.asarray(align.MTCNN_TEMPLATE, dtype=np.float64) * [1.0, 1.0 / align.MTCNN_BOX_ASPECT]
    unit = (unit - unit[:2].mean(axis=0)) / (unit[1, 0] - unit[0, 0])
    ears = np.array([[-0.9, 0.3], [0.9, 0.3]])
    pts = np.vstack([unit, ears]) * iod
    a = math.radians(roll_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    pts = pts @ rot.T + centre
    side = iod / 0.415
    box = (centre[0] - side / 2, centre[1] - side * 0.35, side, side)
    return Detection(box=box, score=score, keypoints=tuple((float(x), float(y)) for x, y in pts))


def draw_markers(image: npt.NDArray[np.uint8], det: Detection, radius: int) -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    for (x, y), colour in zip(det.keypoints[:4], colours, strict=True):
        cv2.circle(image, (round(x), round(y)), radius, colour, -1)


def marker_centre(crop: npt.NDArray[np.uint8], colour: tuple[int, int, int]) -> npt.NDArray[np.float64]:
    diff = np.abs(crop.astype(np.int32) - np.asarray(colour)).sum(axis=2)
    ys, xs = np.nonzero(diff < 90)
    assert len(xs) > 0, f"marker {colour} not in the crop"
    return np.array([xs.mean(), ys.mean()])


# --- tiling and merging -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height", "tile", "overlap"), [(1920, 1080, 229, 0.25), (640, 480, 360, 0.3)])
def test_tile_grid_covers_image_with_overlap(width: int, height: int, tile: int, overlap: float) -> None:
    tiles = detector.tile_grid(width, height, tile, overlap)
    covered = np.zeros((height, width), dtype=np.int32)
    for t in tiles:
        assert t.x >= 0 and t.x + t.w <= width and t.y >= 0 and t.y + t.h <= height
        covered[t.y : t.y + t.h, t.x : t.x + t.w] += 1
    assert covered.min() >= 1
    xs = sorted({t.x for t in tiles})
    assert all(b - a <= tile * (1 - overlap) for a, b in itertools.pairwise(xs))


def test_tile_grid_clips_tiles_larger_than_image() -> None:
    assert detector.tile_grid(300, 200, 512, 0.25) == [detector.Tile(0, 0, 300, 200)]


def test_pyramid_levels_hand_over_without_gaps() -> None:
    sides = detector.pyramid(detector.first_tile(32), 0.25, 1920)
    assert sides[0] * detector.MIN_FACE_FRACTION >= 32
    assert sides[-1] < 1920 <= sides[-1] * 0.25 / detector.MIN_FACE_FRACTION + 1
    for small, big in itertools.pairwise(sides):
        # a face too big to lie whole in a small tile is already reliably found by the next level
        assert big * detector.MIN_FACE_FRACTION <= small * 0.25 + 1


def test_tile_sizes_by_strategy() -> None:
    s = DetectSettings(min_face_px=32)
    assert detector.tile_sizes("full", s, 1920, 1080) == ()
    assert detector.tile_sizes("tiles540", s, 1920, 1080)[0] == 540
    assert detector.tile_sizes("auto", s, 1920, 1080)[0] == detector.first_tile(32)
    assert detector.tile_sizes("auto", DetectSettings(min_face_px=16), 640, 480)[0] < detector.MODEL_INPUT_PX
    assert detector.tile_sizes("tiles540", s, 400, 300) == ()
    with pytest.raises(ValueError, match="unknown detection strategy"):
        detector.tile_sizes("nope", s, 640, 480)


def test_nms_keeps_best_of_overlapping_and_caps_nothing() -> None:
    a = Detection((0, 0, 10, 10), 0.9, ())
    b = Detection((1, 1, 10, 10), 0.95, ())
    c = Detection((50, 50, 10, 10), 0.6, ())
    assert detector.nms([a, b, c], 0.3) == [b, c]
    assert detector.nms([a, b, c], 0.9) == [b, a, c]  # IoU(a, b) = 81/119 is under 0.9: both kept
    crowd = [Detection((20.0 * i, 0, 10, 10), 0.9, ()) for i in range(300)]
    assert len(detector.nms(crowd, 0.3)) == 300  # no cap: the stage's max_faces guard reports what it drops
    assert detector.iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)


def fake_raw(box: tuple[int, int, int, int], score: float, size: tuple[int, int]) -> SimpleNamespace:
    """A stand-in for a Tasks detection on an input of ``size`` (w, h)."""
    x, y, w, h = box
    kps = [SimpleNamespace(x=(x + w * fx) / size[0], y=(y + h * 0.4) / size[1]) for fx in (0.3, 0.7)]
    return SimpleNamespace(
        bounding_box=SimpleNamespace(origin_x=x, origin_y=y, width=w, height=h),
        categories=[SimpleNamespace(score=score)],
        keypoints=kps,
    )


def test_detector_maps_tiles_back_drops_cut_faces_and_merges(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = DetectSettings(min_face_px=32, tile_overlap=0.25)
    det = MediaPipeDetector(Path("unused.tflite"), settings, strategy="tiles360")
    seen: list[tuple[int, int]] = []

    def raw(self: MediaPipeDetector, crop: npt.NDArray[np.uint8]) -> list[SimpleNamespace]:
        h, w = crop.shape[:2]
        seen.append((w, h))
        if (w, h) != (360, 360):
            return []
        # a whole face in the middle of every tile, and one cut by the right edge
        return [fake_raw((150, 150, 60, 60), 0.9, (w, h)), fake_raw((330, 100, 40, 40), 0.95, (w, h))]

    monkeypatch.setattr(MediaPipeDetector, "_detect_raw", raw)
    image = np.zeros((480, 640, 3), np.uint8)
    found = det.detect(image)
    tiles = detector.tile_grid(640, 480, 360, 0.25)
    assert seen[0] == (640, 480) and len(seen) == 1 + len(tiles)
    centres = sorted((round(d.box[0]), round(d.box[1])) for d in found)
    expected = sorted({(t.x + 150, t.y + 150) for t in tiles})
    # cut faces survive only in tiles on the right image border, where no other tile could hold them whole
    border = sorted({(t.x + 330, t.y + 100) for t in tiles if t.x + t.w == 640})
    assert centres == sorted(expected + border)
    first = next(d for d in found if d.box[:2] == (150.0, 150.0))
    assert first.keypoints[0] == pytest.approx((150 + 18, 150 + 24))


def test_detector_upscales_small_tiles_and_rejects_bad_input(monkeypatch: pytest.MonkeyPatch) -> None:
    det = MediaPipeDetector(Path("unused.tflite"), DetectSettings(min_face_px=12), strategy="auto")
    sizes: list[tuple[int, int]] = []

    def raw(self: MediaPipeDetector, crop: npt.NDArray[np.uint8]) -> list[SimpleNamespace]:
        sizes.append((crop.shape[1], crop.shape[0]))
        return []

    monkeypatch.setattr(MediaPipeDetector, "_detect_raw", raw)
    assert det.detect(np.zeros((200, 200, 3), np.uint8)) == []
    assert min(min(s) for s in sizes) >= detector.MODEL_INPUT_PX
    with pytest.raises(ValueError, match="RGB uint8"):
        det.detect(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="unknown detection strategy"):
        MediaPipeDetector(Path("unused.tflite"), DetectSettings(), strategy="bogus")


# --- alignment ----------------------------------------------------------------------------------------------


def test_fit_similarity_recovers_known_transform() -> None:
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    a = 2.0 * complex(math.cos(0.5), math.sin(0.5))
    truth = np.array([[a.real, -a.imag, 7.0], [a.imag, a.real, -3.0]])
    dst = src @ truth[:, :2].T + truth[:, 2]
    got = align.fit_similarity(src, dst, np.ones(5))
    np.testing.assert_allclose(got, truth, atol=1e-9)
    with pytest.raises(ValueError, match="degenerate"):
        align.fit_similarity(np.zeros((3, 2)), dst[:3], np.ones(3))


@pytest.mark.parametrize(("centre", "iod", "roll"), [((300, 200), 40, 0), ((120, 330), 25, -35), ((500, 250), 220, 20)])
def test_align_face_puts_keypoints_on_template(centre: tuple[float, float], iod: float, roll: float) -> None:
    image = np.full((600, 800, 3), 128, np.uint8)
    det = face_detection(centre, iod, roll)
    draw_markers(image, det, radius=max(2, round(iod / 12)))
    crop = align.align_face(image, det, size=CROP, margin=MARGIN)
    assert crop.shape == (CROP, CROP, 3) and crop.dtype == np.uint8
    want = template_crop_points()
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]):
        np.testing.assert_allclose(marker_centre(crop, colour), want[i], atol=2.5)


def test_aligned_crop_ignores_box_position() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (300, 300, 3), dtype=np.uint8)
    det = face_detection((150, 140), 50, 10)
    shifted = Detection(box=(det.box[0] + 17, det.box[1] - 9, det.box[2] * 1.3, det.box[3] * 1.3), score=0.5,
                        keypoints=det.keypoints)
    np.testing.assert_array_equal(align.align_face(image, det), align.align_face(image, shifted))


def test_eyes_sit_where_mtcnn_crops_put_them() -> None:
    eyes = template_crop_points()[:2] / CROP
    assert 0.35 <= eyes[:, 1].mean() <= 0.45
    assert 0.3 <= eyes[1, 0] - eyes[0, 0] <= 0.45


def test_align_without_keypoints_uses_box() -> None:
    image = np.zeros((200, 200, 3), np.uint8)
    image[50:150, 60:140] = 255
    crop = align.align_face(image, Detection((60, 50, 80, 80), 0.9, ()), size=64, margin=0.0)
    assert crop.shape == (64, 64, 3)
    assert crop[32, 32].tolist() == [255, 255, 255]


# --- quality and gate ---------------------------------------------------------------------------------------


def test_sharpness_drops_with_blur() -> None:
    cells = np.indices((160, 160)) // 20
    checker = ((cells[0] + cells[1]) % 2 * 255).astype(np.uint8)
    sharp = np.dstack([checker] * 3)
    soft = np.asarray(cv2.GaussianBlur(sharp, (0, 0), 8), dtype=np.uint8)
    assert quality.sharpness(sharp) > 10 * quality.sharpness(soft)
    # measured at 32x32: upscaling a small crop does not by itself make it look blurred
    upscaled = np.asarray(cv2.resize(sharp[::5, ::5], (160, 160), interpolation=cv2.INTER_CUBIC), dtype=np.uint8)
    assert quality.sharpness(upscaled) > 0.3 * quality.sharpness(sharp)  # at 160x160: 0.03
    assert quality.sharpness(np.full((160, 160, 3), 90, np.uint8)) == 0.0


def test_pose_checks() -> None:
    frontal = face_detection((100, 100), 40)
    assert quality.pose_ok(frontal)
    assert quality.pose_ok(face_detection((100, 100), 40, roll_deg=50))
    kp = list(frontal.keypoints)
    yawed = Detection(frontal.box, 0.9, (kp[0], kp[1], (kp[1][0] + 10, kp[2][1]), *kp[3:]))
    assert not quality.pose_ok(yawed)
    upside_down = face_detection((100, 100), 40, roll_deg=180)
    flipped = Detection(upside_down.box, 0.9, (kp[0], kp[1], *upside_down.keypoints[2:]))
    assert not quality.pose_ok(flipped)
    squeezed = Detection((frontal.box[0], frontal.box[1], 40 / 0.15, 40 / 0.15), 0.9, frontal.keypoints)
    assert not quality.pose_ok(squeezed)
    assert not quality.pose_ok(Detection(frontal.box, 0.9, tuple(kp[:2])))


def test_the_gate_reads_the_detections_own_keypoints_and_alignment_the_refined_ones() -> None:
    frontal = face_detection((100, 100), 40)
    kp = list(frontal.keypoints)
    yawed = (kp[0], kp[1], (kp[1][0] + 10, kp[2][1]), *kp[3:])  # nose out beyond the left eye
    refined = Detection(frontal.box, 0.9, yawed, gate_keypoints=frontal.keypoints)
    assert quality.pose_ok(refined) and quality.assess(refined, np.zeros((160, 160, 3), np.uint8)).pose_ok
    assert not quality.pose_ok(Detection(frontal.box, 0.9, frontal.keypoints, gate_keypoints=yawed))
    assert quality.assess(refined, np.zeros((160, 160, 3), np.uint8)).eye_distance_px == pytest.approx(40)
    assert not np.allclose(align.alignment_matrix(refined), align.alignment_matrix(frontal))


def test_assess_reports_size_score_sharpness_and_eyes() -> None:
    det = face_detection((100, 100), 40, score=0.83)
    crop = np.random.default_rng(2).integers(0, 255, (160, 160, 3), dtype=np.uint8)
    q = quality.assess(det, crop)
    assert q.face_px == pytest.approx(det.box[2])
    assert q.score == pytest.approx(0.83)
    assert q.eye_distance_px == pytest.approx(40)
    assert q.sharpness == pytest.approx(quality.sharpness(crop))
    assert q.pose_ok


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({}, None),
        ({"face_px": 20.0}, Reason.TOO_SMALL),
        ({"score": 0.3}, Reason.LOW_SCORE),
        ({"pose_ok": False}, Reason.BAD_POSE),
        ({"sharpness": 1.0}, Reason.BLURRY),
        ({"sharpness": DetectSettings().gate_min_sharpness}, None),  # at the gate: sharp enough
        ({"face_px": 20.0, "sharpness": 1.0}, Reason.TOO_SMALL),
    ],
)
def test_gate(changes: dict[str, object], reason: str | None) -> None:
    from rfr.core.schemas import FaceQuality

    settings = DetectSettings()
    good = {"face_px": 64.0, "score": 0.9, "sharpness": settings.gate_min_sharpness + 1, "eye_distance_px": 26.0,
            "pose_ok": True}
    assert quality.gate(FaceQuality.model_validate({**good, **changes}), settings) == reason
