"""Both models follow the one lifecycle (rfr.models.lifecycle.Model): built once by load(), freed by close(),
built again by the next load(), and named by model_id."""

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
    assert detector.model_id == "mediapipe-blazeface:face_detection_short_range"

    assert detector.load() is detector and embedder.load() is embedder
    graph, network = detector._task, embedder._model  # the native objects load() built
    assert graph is not None and network is not None
    detector.load(), embedder.load()
    assert detector._task is graph and embedder._model is network  # idempotent: nothing built twice
    first = embedder.embed(grey)
    detector.detect(grey[0])
    calls = detector.model_calls

    detector.close(), embedder.close()
    assert detector._task is None and embedder._model is None  # freed
    detector.load(), embedder.load()
    assert detector._task is not None and detector._task is not graph  # built again, a new graph
    assert embedder._model is not None and embedder._model is not network
    np.testing.assert_allclose(embedder.embed(grey), first, atol=1e-6)  # the same weights
    detector.detect(grey[0])
    assert detector.model_calls == calls + 1
    detector.close()
    embedder.close()
