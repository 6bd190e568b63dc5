"""Unit tests for the CCTV degradation generator on synthetic face images."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from rfr.tools import degrade
from rfr.tools.degrade import LEVELS, Degradation, apply_degradation, place_in_scene


def fake_face(size: int = 150) -> npt.NDArray[np.uint8]:
    """A dark photo with a bright disc whose centre is where the generator assumes the face centre is."""
    img = np.full((size, size, 3), 40, np.uint8)
    cx, cy = degrade.LFW_FACE_CENTER
    radius = round(size * degrade.LFW_FACE_FRACTION / 2)
    cv2.circle(img, (round(cx * size), round(cy * size)), radius, (230, 200, 180), -1)
    return img


def disc_centre(scene: npt.NDArray[np.uint8]) -> tuple[float, float]:
    """Centre of the bright disc of :func:`fake_face` in a scene with a black background (any light level)."""
    red = np.asarray(cv2.GaussianBlur(scene[..., 0], (0, 0), 1), dtype=np.float32)
    ys, xs = np.nonzero(red > 0.6 * red.max())
    return float(xs.mean()), float(ys.mean())


def test_levels_are_named_and_ordered_by_severity() -> None:
    clean, mild, hard = LEVELS["clean"], LEVELS["mild"], LEVELS["hard"]
    assert clean == Degradation("clean")
    assert clean.blur_sigma < mild.blur_sigma < hard.blur_sigma
    assert clean.noise_sigma < mild.noise_sigma < hard.noise_sigma
    assert mild.jpeg_quality is not None and hard.jpeg_quality is not None and hard.jpeg_quality < mild.jpeg_quality
    assert hard.brightness < mild.brightness < 1.0
    assert mild.max_rotation_deg < hard.max_rotation_deg


@pytest.mark.parametrize("scene_size", [degrade.SCENE_1080P, degrade.SCENE_VGA])
def test_place_in_scene_shape_and_box(scene_size: tuple[int, int]) -> None:
    scene, box = place_in_scene(fake_face(), 48, scene_size, "mild", np.random.default_rng(3))
    width, height = scene_size
    assert scene.shape == (height, width, 3) and scene.dtype == np.uint8
    assert box.width == box.height == 48
    assert box.x >= 0 and box.x + box.width <= width and box.y >= 0 and box.y + box.height <= height


def test_same_seed_same_scene_other_seed_other_scene() -> None:
    a, box_a = place_in_scene(fake_face(), 40, degrade.SCENE_VGA, "hard", np.random.default_rng(7))
    b, box_b = place_in_scene(fake_face(), 40, degrade.SCENE_VGA, "hard", np.random.default_rng(7))
    c, box_c = place_in_scene(fake_face(), 40, degrade.SCENE_VGA, "hard", np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert box_a == box_b
    assert box_a != box_c and not np.array_equal(a, c)


def test_background_is_textured_not_flat() -> None:
    bg = degrade.synthetic_background(degrade.SCENE_VGA, np.random.default_rng(0))
    grey = cv2.cvtColor(bg, cv2.COLOR_RGB2GRAY)
    assert grey.std() > 10
    blocks = grey[: 480 // 60 * 60, :].reshape(8, 60, 10, 64).mean(axis=(1, 3))
    assert blocks.std() > 5  # varies across the frame, not just grain


@pytest.mark.parametrize(("face_px", "level"), [(32, "clean"), (64, "clean"), (120, "hard"), (80, "mild")])
def test_face_lands_in_box_at_requested_size(face_px: int, level: str) -> None:
    black = np.zeros((480, 640, 3), np.uint8)
    rng = np.random.default_rng(face_px)
    scene, box = place_in_scene(fake_face(), face_px, degrade.SCENE_VGA, level, rng, background=black)
    if level == "clean":
        _, xs = np.nonzero(scene[..., 0] > 215)
        assert xs.max() - xs.min() + 1 == pytest.approx(face_px, abs=2)
    cx, cy = disc_centre(scene)
    assert cx == pytest.approx(box.x + face_px / 2, abs=max(2.0, 0.08 * face_px))
    assert cy == pytest.approx(box.y + face_px / 2, abs=max(2.0, 0.08 * face_px))


def test_face_too_large_for_scene_is_refused() -> None:
    with pytest.raises(ValueError, match="larger than"):
        place_in_scene(fake_face(), 400, degrade.SCENE_VGA, "clean", np.random.default_rng(0))


def test_clean_level_is_identity() -> None:
    img = np.random.default_rng(1).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    np.testing.assert_array_equal(apply_degradation(img, LEVELS["clean"], np.random.default_rng(0)), img)


def test_each_degradation_does_what_it_says() -> None:
    rng = np.random.default_rng(2)
    checker = np.dstack([(np.indices((64, 64)).sum(axis=0) % 2 * 200 + 20).astype(np.uint8)] * 3)

    def lap(img: npt.NDArray[np.uint8]) -> float:
        return float(cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())

    assert lap(apply_degradation(checker, Degradation("b", blur_sigma=1.5), rng)) < 0.1 * lap(checker)
    flat = np.full((64, 64, 3), 128, np.uint8)
    assert apply_degradation(flat, Degradation("n", noise_sigma=8.0), rng).std() == pytest.approx(8.0, rel=0.15)
    dark = apply_degradation(flat, Degradation("d", brightness=0.5, gamma=1.5), rng)
    assert dark.mean() == pytest.approx(255 * 0.5 * (128 / 255) ** 1.5, abs=1)
    jpeg = apply_degradation(checker, Degradation("j", jpeg_quality=20), rng)
    assert jpeg.shape == checker.shape and not np.array_equal(jpeg, checker)
