"""The low-resolution fine-tune (rfr/tools/train/): fresh seeded crops, a deterministic run, and a delta that
rebuilds the trained network from the base weights. Random weights and synthetic photos: no shared data."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from facenet_pytorch import InceptionResnetV1

from rfr.core.geometry import Box
from rfr.embedding.embedder import build_model
from rfr.face.detector import Detection
from rfr.models.finetune import apply_delta
from rfr.tools.train import data as train_data
from rfr.tools.train.data import FaceSet, Recipe, lowres_sample, scene_crop
from rfr.tools.train.lowres import CropMaker, TrainConfig, embed_all, extract_delta, train

DETECTION = Detection(Box(44.0, 50.0, 62.0, 62.0), 0.9,
                      ((62.0, 70.0), (88.0, 70.0), (75.0, 84.0), (75.0, 98.0), (48.0, 74.0), (102.0, 74.0)))


@pytest.fixture(scope="module")
def faces() -> FaceSet:
    rng = np.random.default_rng(5)
    images = tuple(rng.integers(0, 256, (150, 150, 3), dtype=np.uint8) for _ in range(4))
    return FaceSet(("a/1.jpg", "a/2.jpg", "b/1.jpg", "b/2.jpg"), ("a", "b"), np.array([0, 0, 1, 1]), images,
                   (DETECTION,) * 4)


@pytest.fixture(scope="module")
def base() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return dict(InceptionResnetV1(pretrained=None).eval().state_dict())


def test_lowres_crops_are_seeded_and_fresh(faces: FaceSet) -> None:
    recipe = Recipe(full_res=0.0)
    one = lowres_sample(faces.images[0], DETECTION, np.random.default_rng(1), recipe)[0]
    again = lowres_sample(faces.images[0], DETECTION, np.random.default_rng(1), recipe)[0]
    other = lowres_sample(faces.images[0], DETECTION, np.random.default_rng(2), recipe)[0]
    assert one.shape == (160, 160, 3) and one.dtype == np.uint8
    assert np.array_equal(one, again) and not np.array_equal(one, other)


def test_crops_do_not_depend_on_the_worker_count(faces: FaceSet) -> None:
    idx = np.array([0, 3, 1, 2, 0])
    made = []
    for workers in (0, 2):
        maker = CropMaker(faces, TrainConfig(workers=workers))
        made.append(maker(7, idx))
        assert sum(maker.kinds.values()) == len(idx) and set(maker.kinds) <= {"full_res", "keypoints"}
        maker.close()
    assert np.array_equal(made[0][0], made[1][0]) and np.array_equal(made[0][1], made[1][1])


def test_training_is_deterministic_and_the_delta_rebuilds_the_student(
    faces: FaceSet, base: dict[str, torch.Tensor]
) -> None:
    config = replace(TrainConfig(), tune_from="block8", lora_rank=4, steps=2, batch=4, threads=1, lr=1e-2)
    student = train(base, faces, config)
    delta = extract_delta(student, base, config, dtype=torch.float32)
    assert delta and all(k.startswith(("block8.", "last_linear.", "last_bn.")) for k in delta)
    assert any(k.endswith(".lora_down") for k in delta) and "last_linear.weight" in delta
    crops = np.stack([lowres_sample(img, DETECTION, np.random.default_rng(0), Recipe())[0] for img in faces.images])
    rebuilt = build_model(apply_delta(base, delta))
    torch.testing.assert_close(embed_all(rebuilt, crops), embed_all(student, crops), atol=1e-5, rtol=0)
    assert not torch.allclose(embed_all(build_model(base), crops), embed_all(student, crops), atol=1e-4)
    again = extract_delta(train(base, faces, config), base, config, dtype=torch.float32)
    assert delta.keys() == again.keys() and all(torch.equal(delta[k], again[k]) for k in delta)


class GridDetector:
    """Boxes of the true face's size on a 16 px grid over the whole scene (a fake: no model)."""

    def __init__(self, side: float) -> None:
        self.side = side
        self.scenes: list[np.ndarray] = []

    def detect(self, image: np.ndarray) -> list[Detection]:
        self.scenes.append(image)
        h, w = image.shape[:2]
        return [Detection(Box(float(x), float(y), self.side, self.side), 0.9, DETECTION.keypoints)
                for x in range(0, w, 16) for y in range(0, h, 16)]


class BlindDetector:
    def detect(self, image: np.ndarray) -> list[Detection]:
        return []


def test_scene_samples_align_the_detection_nearest_the_pasted_face(
    faces: FaceSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    placed: list[Box] = []
    aligned: list[Detection] = []
    from rfr.face.align import align_face as real_align
    from rfr.tools.degrade import place_in_scene as real_place


    def place(*args: object, **kwargs: object) -> tuple[np.ndarray, Box]:
        scene, truth = real_place(*args, **kwargs)  # type: ignore[arg-type]
        placed.append(truth)
        return scene, truth

    def align(image: np.ndarray, detection: Detection, *args: object) -> np.ndarray:
        aligned.append(detection)
        return real_align(image, detection, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(train_data, "place_in_scene", place)
    monkeypatch.setattr(train_data, "align_face", align)
    detector = GridDetector(40.0)
    camera = train_data.draw_degradation(np.random.default_rng(3), Recipe())
    crop = scene_crop(faces.images[0], DETECTION, 40.0, camera, False, np.random.default_rng(3), detector)
    assert crop is not None and crop.shape == (160, 160, 3)
    assert detector.scenes[0].shape[:2] == train_data.SCENE_SIZE[::-1]
    truth, chosen = placed[0], aligned[0]

    def offset(box: Box) -> float:
        return float(np.hypot(box.x + box.width / 2 - (truth.x + truth.width / 2),
                              box.y + box.height / 2 - (truth.y + truth.height / 2)))

    grid = detector.detect(detector.scenes[0])
    assert offset(chosen.box) == min(offset(d.box) for d in grid) <= 0.5 * truth.width


def test_a_missed_scene_sample_falls_back_to_the_keypoint_crop(faces: FaceSet) -> None:
    camera = train_data.draw_degradation(np.random.default_rng(4), Recipe())
    missed = scene_crop(faces.images[0], DETECTION, 40.0, camera, False, np.random.default_rng(4), BlindDetector())
    assert missed is None
    recipe = Recipe(full_res=0.0, scene=1.0)
    crop, kind = lowres_sample(faces.images[0], DETECTION, np.random.default_rng(4), recipe, BlindDetector())
    assert crop.shape == (160, 160, 3) and crop.dtype == np.uint8 and kind == "scene_missed"
    _, found = lowres_sample(faces.images[0], DETECTION, np.random.default_rng(4), recipe, GridDetector(40.0))
    assert found == "scene"
    with pytest.raises(ValueError, match="needs a detector"):
        lowres_sample(faces.images[0], DETECTION, np.random.default_rng(4), recipe)
