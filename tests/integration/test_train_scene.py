"""The fine-tune's scene samples (``rfr train lowres --scene``) with the product's real detector on real faces:
the face pasted into a CCTV-like scene is found again and aligned like the services align it, the same seed gives
the same crop, and the crop maker hands each step its crops with the detector from the given model folder.

Faces: the first training identities of the shared LFW faces (rfr/tools/train/split.py), MediaPipe keypoints.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from rfr.core.image_files import identity_folders
from rfr.core.settings import DetectSettings
from rfr.face.runners import make_detector
from rfr.tools.train.data import FaceSet, Recipe, draw_degradation, load_faceset, scene_crop
from rfr.tools.train.lowres import CropMaker, TrainConfig
from rfr.tools.train.split import training_identities

PEOPLE = 12


@pytest.fixture(scope="module")
def faces(lfw_dir: Path, model_dir: Path) -> FaceSet:
    folders = identity_folders(lfw_dir)
    people = sorted(training_identities(lfw_dir))[:PEOPLE]
    return load_faceset({k: folders[k][:2] for k in people}, None, model_dir)


def test_the_detector_finds_the_pasted_face_at_cctv_sizes(faces: FaceSet, model_dir: Path) -> None:
    detector = make_detector(DetectSettings(threads=1), model_dir)
    recipe = Recipe()
    found = 0
    for i, (image, detection) in enumerate(zip(faces.images, faces.detections, strict=True)):
        camera = replace(draw_degradation(np.random.default_rng([i, 0]), recipe), max_rotation_deg=10.0,
                         max_perspective=0.05)
        crop = scene_crop(image, detection, 40.0, camera, False, np.random.default_rng([i, 1]), detector)
        again = scene_crop(image, detection, 40.0, camera, False, np.random.default_rng([i, 1]), detector)
        if crop is not None:
            found += 1
            assert crop.shape == (160, 160, 3) and again is not None and np.array_equal(crop, again)
        else:
            assert again is None
    assert found >= 0.9 * len(faces)  # 40 px faces are above the detector's 32 px smallest face


def test_the_crop_maker_makes_scene_samples_with_the_given_models(faces: FaceSet, model_dir: Path) -> None:
    config = TrainConfig(recipe=Recipe(full_res=0.0, scene=1.0))
    maker = CropMaker(faces, config, model_dir)
    try:
        crops, flips = maker(0, np.arange(len(faces)))
        again, _ = maker(0, np.arange(len(faces)))
    finally:
        maker.close()
    assert crops.shape == (len(faces), 160, 160, 3) and flips.shape == (len(faces),)
    assert np.array_equal(crops, again)
    keypoints = CropMaker(faces, replace(config, recipe=Recipe(full_res=0.0)))
    try:
        plain, _ = keypoints(0, np.arange(len(faces)))
    finally:
        keypoints.close()
    assert not np.array_equal(crops, plain)  # the scene samples are not the keypoint-aligned ones
