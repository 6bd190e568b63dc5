"""The embedder with the real CASIA-WebFace weights on real faces: identity separation and precision effects."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from facenet_pytorch import InceptionResnetV1, fixed_image_standardization

from rfr.core.settings import EmbedSettings
from rfr.embedding.device import cpu_has_fast_bf16
from rfr.embedding.embedder import load_embedder
from rfr.embedding.samples import centre_crop, lfw_people
from rfr.models import facenet_weights_path

PEOPLE = 40
RecordProperty = Callable[[str, object], None]


@pytest.fixture(scope="module")
def pairs(lfw_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Two different photos of each of ``PEOPLE`` people (row i of both arrays: the same person)."""
    people = lfw_people(lfw_dir, min_images=2, limit=PEOPLE)
    first = np.stack([centre_crop(images[0]) for images in people])
    second = np.stack([centre_crop(images[1]) for images in people])
    return first, second


def test_same_person_scores_higher_than_different_people(
    model_dir: Path, pairs: tuple[np.ndarray, np.ndarray], record_property: RecordProperty
) -> None:
    emb = load_embedder(EmbedSettings(device="cpu"), model_dir)
    first, second = emb.embed(pairs[0]), emb.embed(pairs[1])
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-4)
    genuine = (first * second).sum(axis=1)  # same person, different photo
    impostor = (first @ second.T)[~np.eye(PEOPLE, dtype=bool)]  # every different-person pair
    auc = float((genuine[:, None] > impostor[None, :]).mean())
    record_property("genuine_mean", float(genuine.mean()))
    record_property("impostor_mean", float(impostor.mean()))
    record_property("auc", auc)
    assert genuine.mean() > impostor.mean() + 0.3
    assert auc > 0.97
    assert np.median(genuine) > np.quantile(impostor, 0.99)


def test_fp32_equals_facenet_pytorch_with_real_weights(
    model_dir: Path, pairs: tuple[np.ndarray, np.ndarray], record_property: RecordProperty
) -> None:
    crops = pairs[0][:8]
    reference = InceptionResnetV1(pretrained=None).eval()
    state = torch.load(facenet_weights_path(model_dir), map_location="cpu", weights_only=True)
    reference.load_state_dict({k: v for k, v in state.items() if not k.startswith("logits.")}, strict=True)
    with torch.no_grad():
        expected = reference(fixed_image_standardization(torch.tensor(crops).permute(0, 3, 1, 2).float())).numpy()
    got = load_embedder(EmbedSettings(device="cpu", precision="fp32"), model_dir).embed(crops)
    record_property("fp32_max_abs_diff", float(np.abs(got - expected).max()))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_bf16_matches_fp32(
    model_dir: Path, pairs: tuple[np.ndarray, np.ndarray], record_property: RecordProperty
) -> None:
    if not cpu_has_fast_bf16():
        pytest.skip("this CPU has no native bf16 (the auto path is fp32 here)")
    crops = np.concatenate(pairs)
    fp32 = load_embedder(EmbedSettings(device="cpu", precision="fp32"), model_dir).embed(crops)
    bf16 = load_embedder(EmbedSettings(device="cpu", precision="bf16"), model_dir).embed(crops)
    cosine = (fp32 * bf16).sum(axis=1)
    record_property("bf16_cosine_min", float(cosine.min()))
    record_property("bf16_cosine_mean", float(cosine.mean()))
    assert cosine.min() > 0.999
    # the top candidate must not change where fp32 has a clear winner (margin well above bf16's noise)
    n = len(pairs[0])
    scores32, scores16 = fp32[:n] @ fp32[n:].T, bf16[:n] @ bf16[n:].T
    top2 = np.sort(scores32, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 0.05
    assert clear.sum() > n // 2
    assert np.array_equal(scores32.argmax(axis=1)[clear], scores16.argmax(axis=1)[clear])
