"""The embedder library API on a randomly initialised InceptionResnetV1 (unit tier only: never in services).

Equivalence with facenet-pytorch does not depend on the weights' values, so random weights saved to a
temporary file test the preprocessing, the strict load and the precision paths; the tests with the real
weights and real faces are in tests/integration/test_embed_model.py.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from facenet_pytorch import InceptionResnetV1, fixed_image_standardization

from rfr.core.settings import EmbedSettings
from rfr.embedding import embedder as embedder_mod
from rfr.embedding.embedder import Embedder, check_crops, load_embedder, model_id_for, preprocess
from rfr.models import ModelMissingError


@pytest.fixture(scope="module")
def reference() -> torch.nn.Module:
    torch.manual_seed(1234)
    model: torch.nn.Module = InceptionResnetV1(pretrained=None).eval()
    with torch.no_grad():  # make the BatchNorm statistics non-trivial, as trained ones are
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.uniform_(-0.1, 0.1)
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def weights(reference: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "random.pt"
    state = dict(reference.state_dict())
    state["logits.weight"] = torch.zeros(7, 512)  # a training head, as published state dicts carry
    state["logits.bias"] = torch.zeros(7)
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, size=(2, 160, 160, 3), dtype=np.uint8)


def direct(reference: torch.nn.Module, crops: np.ndarray) -> np.ndarray:
    """Embeddings computed the way facenet-pytorch documents it."""
    x = fixed_image_standardization(torch.tensor(crops).permute(0, 3, 1, 2).float())
    with torch.no_grad():
        out: np.ndarray = reference(x).numpy()
    return out


def settings_for(weights: Path, **kw: object) -> EmbedSettings:
    return EmbedSettings(weights_path=weights, device="cpu", threads=2, **kw)


def test_preprocess_is_fixed_image_standardization(crops: np.ndarray) -> None:
    expected = fixed_image_standardization(torch.tensor(crops).permute(0, 3, 1, 2).float())
    assert torch.equal(preprocess(crops), expected)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((2, 160, 160, 3), dtype=np.float32),
        np.zeros((160, 160, 3), dtype=np.uint8),
        np.zeros((1, 150, 150, 3), dtype=np.uint8),
        np.zeros((1, 3, 160, 160), dtype=np.uint8),
    ],
)
def test_check_crops_rejects_other_layouts(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="160 x 160 x 3 uint8"):
        check_crops(bad)


def test_fp32_equals_facenet_pytorch(reference: torch.nn.Module, weights: Path, crops: np.ndarray) -> None:
    emb = load_embedder(settings_for(weights, precision="fp32"), weights.parent)
    assert isinstance(emb, Embedder)
    assert emb.model_id == "facenet-casia-webface" == model_id_for("casia-webface")
    assert len(emb.weights_sha256) == 64 and emb.dim == 512
    got = emb.embed(crops)
    assert got.dtype == np.float32 and got.shape == (2, 512)
    np.testing.assert_allclose(got, direct(reference, crops), rtol=0, atol=1e-6)


def test_bf16_is_close_and_unit_length(reference: torch.nn.Module, weights: Path, crops: np.ndarray) -> None:
    got = load_embedder(settings_for(weights, precision="bf16"), weights.parent).embed(crops)
    assert got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cosine = (got * direct(reference, crops)).sum(axis=1)
    assert cosine.min() > 0.99


def test_empty_batch(weights: Path) -> None:
    out = load_embedder(settings_for(weights, precision="fp32"), weights.parent).embed(
        np.zeros((0, 160, 160, 3), dtype=np.uint8))
    assert out.shape == (0, 512)


def test_loaded_once_lazily_and_shared(weights: Path, crops: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[int] = []
    real_build = embedder_mod.build_model

    def counting_build(state: dict[str, torch.Tensor]) -> torch.nn.Module:
        built.append(1)
        return real_build(state)

    monkeypatch.setattr(embedder_mod, "build_model", counting_build)
    settings = settings_for(weights, precision="fp32", batch_size=7)  # a settings value no other test uses
    emb = load_embedder(settings, weights.parent)
    assert built == [] and load_embedder(settings, weights.parent) is emb
    results: list[np.ndarray] = []
    threads = [threading.Thread(target=lambda: results.append(emb.embed(crops[:2]))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert built == [1] and len(results) == 3
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


def test_missing_weights_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ModelMissingError, match="rfr models fetch"):
        load_embedder(EmbedSettings(device="cpu"), tmp_path)
    with pytest.raises(ModelMissingError, match="RFR_EMBED__WEIGHTS_PATH"):
        load_embedder(EmbedSettings(device="cpu", weights_path=tmp_path / "nope.pt"), tmp_path)


def test_incomplete_state_dict_is_refused(reference: torch.nn.Module, tmp_path: Path) -> None:
    state = dict(reference.state_dict())
    del state["last_bn.running_var"]
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    emb = load_embedder(settings_for(path, precision="fp32"), tmp_path)
    with pytest.raises(ModelMissingError, match=r"last_bn\.running_var(.|\n)*rfr models fetch"):
        emb.load()


def test_unreadable_weights_name_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "junk.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelMissingError, match="rfr models fetch"):
        load_embedder(settings_for(path, precision="fp32"), tmp_path).load()


def test_mirror_tta_fuses_crop_and_mirror(reference: torch.nn.Module, weights: Path, crops: np.ndarray) -> None:
    fused = load_embedder(settings_for(weights, precision="fp32", tta="mirror"), weights.parent)
    got = fused.embed(crops)
    plain, mirrored = direct(reference, crops), direct(reference, np.ascontiguousarray(crops[:, :, ::-1]))
    expected = plain + mirrored
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert fused.model_id == "facenet-casia-webface"  # TTA does not change the model
    assert np.abs(plain - mirrored).max() > 2e-5  # random crops are not symmetric: the check is not vacuous


def test_mirror_tta_of_a_symmetric_crop_is_the_plain_embedding(weights: Path) -> None:
    half = np.random.default_rng(3).integers(0, 256, size=(1, 160, 80, 3), dtype=np.uint8)
    symmetric = np.ascontiguousarray(np.concatenate([half, half[:, :, ::-1]], axis=2))
    plain = load_embedder(settings_for(weights, precision="fp32"), weights.parent).embed(symmetric)
    fused = load_embedder(settings_for(weights, precision="fp32", tta="mirror"), weights.parent).embed(symmetric)
    np.testing.assert_allclose(fused, plain, rtol=0, atol=1e-5)


def test_mirror_fused_is_one_forward_pass_of_2n() -> None:
    calls: list[int] = []

    def forward(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return torch.nn.functional.normalize(x.flatten(1)[:, :4] + torch.arange(4.0), dim=1)

    x = torch.randn(3, 3, 8, 8)
    out = embedder_mod.mirror_fused(forward, x)
    assert calls == [6] and out.shape == (3, 4)
    np.testing.assert_allclose(out.norm(dim=1).numpy(), 1.0, atol=1e-6)
