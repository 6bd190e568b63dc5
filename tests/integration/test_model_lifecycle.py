"""Both models follow the one lifecycle (rfr.models.lifecycle.Model): load once, close, load again, model_id."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rfr.core.settings import DetectSettings, EmbedSettings
from rfr.embedding.embedder import load_embedder
from rfr.face.detector import MediaPipeDetector
from rfr.models import detector_model_path
from rfr.models.lifecycle import Model


def test_detector_and_embedder_load_once_close_and_load_again(model_dir: Path) -> None:
    detector = MediaPipeDetector(detector_model_path(model_dir), DetectSettings())
    embedder = load_embedder(EmbedSettings(device="cpu", precision="fp32", threads=1), model_dir)
    grey = np.full((1, 160, 160, 3), 128, np.uint8)
    for model in (detector, embedder):
        assert isinstance(model, Model) and model.model_id
        assert model.load() is model and model.load() is model  # idempotent: built once
    first = embedder.embed(grey)
    detector.detect(grey[0])
    calls = detector.model_calls
    for model in (detector, embedder):
        model.close()
    assert detector.load() is detector and embedder.load() is embedder  # built again after close
    np.testing.assert_allclose(embedder.embed(grey), first, atol=1e-6)
    detector.detect(grey[0])
    assert detector.model_calls == calls + 1
    detector.close()
    embedder.close()
