"""The converted FaceNet (CASIA-WebFace) PyTorch weights against the source TF graph run by OpenCV DNN.

Both get the same input: RGB 160x160, fixed image standardisation ``(x - 127.5) / 128``, NCHW.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest
import torch

from rfr.models import facenet_weights_path, read_manifest, verify_model_file

Floats = npt.NDArray[np.float32]
CROP_PX = 80  # centre crop of the 150x150 LFW images (faces ~60-80 px wide), resized to 160x160
IDENTITIES = 8
MAX_ABS_DIFF = 1e-5


@pytest.fixture(scope="module")
def torch_facenet(model_dir: Path) -> Any:
    from facenet_pytorch import InceptionResnetV1

    weights = facenet_weights_path(model_dir)
    verify_model_file(model_dir, weights)
    model = InceptionResnetV1(pretrained=None).eval()
    model.load_state_dict(torch.load(weights, weights_only=True), strict=True)
    return model


@pytest.fixture(scope="module")
def opencv_facenet(model_dir: Path) -> Any:
    graph = read_manifest(model_dir)["facenet-casia-webface-graph"].path
    return cv2.dnn.readNetFromTensorflow(str(graph))


def _standardise(rgb: npt.NDArray[np.uint8]) -> Floats:
    """NHWC uint8 RGB -> NCHW float32, fixed image standardisation."""
    return np.ascontiguousarray(((rgb.astype(np.float32) - 127.5) / 128.0).transpose(0, 3, 1, 2))


def _embed_torch(model: Any, batch: Floats) -> Floats:
    with torch.inference_mode():
        out: Floats = model(torch.from_numpy(batch)).numpy()
    return out


def _embed_opencv(net: Any, batch: Floats) -> Floats:
    rows = []
    for sample in batch:  # the frozen graph's reshapes are fixed to batch 1
        net.setInput(sample[None])
        rows.append(np.asarray(net.forward(), dtype=np.float32).reshape(-1))
    return np.stack(rows)


def _face_crop(path: Path) -> npt.NDArray[np.uint8]:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, path
    height, width = bgr.shape[:2]
    top, left = (height - CROP_PX) // 2, (width - CROP_PX) // 2
    crop = np.ascontiguousarray(bgr[top : top + CROP_PX, left : left + CROP_PX, ::-1])
    return np.asarray(cv2.resize(crop, (160, 160), interpolation=cv2.INTER_AREA), dtype=np.uint8)


@pytest.fixture(scope="module")
def lfw_pairs(lfw_dir: Path) -> npt.NDArray[np.uint8]:
    """Two crops for each of the first IDENTITIES people (alphabetically) with >= 2 photos: [a0, b0, a1, b1, ...]."""
    crops = []
    for person in sorted(p for p in lfw_dir.iterdir() if p.is_dir()):
        photos = sorted(person.glob("*.jpg"))
        if len(photos) >= 2:
            crops += [_face_crop(photos[0]), _face_crop(photos[1])]
        if len(crops) == 2 * IDENTITIES:
            break
    if len(crops) < 2 * IDENTITIES:
        pytest.skip(f"fewer than {IDENTITIES} LFW identities with two photos in {lfw_dir}")
    return np.stack(crops)


def _max_abs_diff(torch_model: Any, net: Any, batch: Floats) -> float:
    ours, reference = _embed_torch(torch_model, batch), _embed_opencv(net, batch)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    return float(np.abs(ours - reference).max())


def test_converted_state_dict_is_complete(torch_facenet: Any, model_dir: Path) -> None:
    from facenet_pytorch import InceptionResnetV1

    state = torch.load(facenet_weights_path(model_dir), weights_only=True)
    assert set(state) == set(InceptionResnetV1(pretrained=None).state_dict())
    assert torch.equal(state["conv2d_1a.bn.weight"], torch.ones(32))  # folded BN is an identity plus bias
    assert float(state["conv2d_1a.bn.bias"].abs().sum()) > 0


def test_matches_opencv_on_random_input(
    torch_facenet: Any, opencv_facenet: Any, record_property: Callable[[str, object], None]
) -> None:
    rng = np.random.default_rng(20180408)
    batch = _standardise(rng.integers(0, 256, size=(4, 160, 160, 3), dtype=np.uint8))
    diff = _max_abs_diff(torch_facenet, opencv_facenet, batch)
    record_property("max_abs_diff_random", diff)
    print(f"random input: max |torch - opencv| = {diff:.3g}")
    assert diff < MAX_ABS_DIFF


def test_matches_opencv_on_lfw_faces(
    torch_facenet: Any,
    opencv_facenet: Any,
    lfw_pairs: npt.NDArray[np.uint8],
    record_property: Callable[[str, object], None],
) -> None:
    diff = _max_abs_diff(torch_facenet, opencv_facenet, _standardise(lfw_pairs[:6]))
    record_property("max_abs_diff_lfw", diff)
    print(f"LFW faces: max |torch - opencv| = {diff:.3g}")
    assert diff < MAX_ABS_DIFF


def test_same_person_scores_higher_than_different_people(
    torch_facenet: Any, lfw_pairs: npt.NDArray[np.uint8], record_property: Callable[[str, object], None]
) -> None:
    embeddings = _embed_torch(torch_facenet, _standardise(lfw_pairs))
    first, second = embeddings[0::2], embeddings[1::2]
    same = np.sum(first * second, axis=1)
    cross = first @ second.T
    different = cross[~np.eye(len(first), dtype=bool)]
    auc = float(np.mean(same[:, None] > different[None, :]))
    rank1 = float(np.mean(np.argmax(cross, axis=1) == np.arange(len(first))))
    stats = {
        "same_mean": float(same.mean()),
        "same_min": float(same.min()),
        "different_mean": float(different.mean()),
        "different_max": float(different.max()),
        "auc": auc,
        "rank1": rank1,
    }
    for key, value in stats.items():
        record_property(key, value)
    print("cosine", {k: round(v, 3) for k, v in stats.items()})
    assert stats["same_mean"] - stats["different_mean"] > 0.3
    assert auc > 0.9
    assert rank1 >= 0.75  # each person's first photo finds their own second photo among the IDENTITIES
