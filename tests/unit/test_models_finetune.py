"""Fine-tuned FaceNet weights as a packaged delta (rfr/models/finetune.py) and their provisioning."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from rfr.models import ModelIntegrityError, finetune
from rfr.models.fetch import FACENET_MODELS, default_catalog
from rfr.models.finetune import DELTAS, Delta, apply_delta, build_finetuned, delta_path, read_delta


def test_replacement_and_low_rank_update() -> None:
    base = {"conv.weight": torch.ones(4, 3, 1, 1), "head.weight": torch.zeros(2, 2), "other": torch.ones(1)}
    down, up = torch.randn(2, 3, 1, 1), torch.randn(4, 2)
    delta = {"conv.weight.lora_down": down.half(), "conv.weight.lora_up": up.half(), "head.weight": torch.eye(2).half()}
    merged = apply_delta(base, delta)
    expected = torch.ones(4, 3, 1, 1) + (up.half().float() @ down.half().float().flatten(1)).reshape(4, 3, 1, 1)
    torch.testing.assert_close(merged["conv.weight"], expected)
    assert merged["head.weight"].dtype == torch.float32 and torch.equal(merged["head.weight"], torch.eye(2))
    assert merged["other"] is base["other"] and set(merged) == set(base)


def test_a_delta_that_does_not_fit_is_refused() -> None:
    base = {"w": torch.zeros(2, 2)}
    with pytest.raises(KeyError, match="missing"):
        apply_delta(base, {"missing": torch.zeros(1)})
    with pytest.raises(ValueError, match="shape"):
        apply_delta(base, {"w": torch.zeros(3)})


def test_the_delta_is_checked_against_its_pin(tmp_path: Path) -> None:
    path = tmp_path / "d.pt"
    torch.save({"w": torch.ones(2)}, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert torch.equal(read_delta(path, digest)["w"], torch.ones(2))
    with pytest.raises(ModelIntegrityError, match="pinned"):
        read_delta(path, "0" * 64)


def test_build_finetuned_writes_base_plus_delta(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base_path, delta_file, out = tmp_path / "base.pt", tmp_path / "x.delta.pt", tmp_path / "out" / "tuned.pt"
    torch.save({"w": torch.zeros(2), "b": torch.ones(1)}, base_path)
    torch.save({"w": torch.full((2,), 3.0)}, delta_file)
    delta = Delta("x", "facenet-casia-webface", "x.delta.pt", hashlib.sha256(delta_file.read_bytes()).hexdigest())
    monkeypatch.setattr(finetune, "delta_path", lambda _d: delta_file)
    build_finetuned(base_path, out, delta)
    merged = torch.load(out, weights_only=True)
    assert torch.equal(merged["w"], torch.full((2,), 3.0)) and torch.equal(merged["b"], torch.ones(1))


def test_packaged_deltas_match_their_pins_and_are_provisioned() -> None:
    conversions = {c.name: c for c in default_catalog().conversions}
    names = [c.name for c in default_catalog().conversions]
    for name, delta in DELTAS.items():
        path = delta_path(delta)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == delta.sha256, f"{path} differs from its pin"
        assert path.stat().st_size < 8_000_000  # a few MB ship with the package
        conversion = conversions[f"facenet-{name}"]
        assert conversion.input_name == delta.base and conversion.rel_path == FACENET_MODELS[name]
        assert names.index(delta.base) < names.index(conversion.name)  # built after its base
        assert delta.sha256[:16] in conversion.version  # a new delta rebuilds the cached file
