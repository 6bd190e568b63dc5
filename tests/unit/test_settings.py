from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from rfr.settings import Settings, load_settings


def test_defaults_are_loopback_and_local() -> None:
    s = Settings()
    assert s.kafka.bootstrap_servers.startswith("127.0.0.1:")
    assert s.milvus.uri.startswith("http://127.0.0.1:")
    assert s.metrics.host == "127.0.0.1"
    assert s.ingest.http_host == "127.0.0.1"
    assert s.model_dir == Path.home() / ".cache" / "rfr"


def test_nested_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RFR_KAFKA__BOOTSTRAP_SERVERS", "kafka-0:9092,kafka-1:9092")
    monkeypatch.setenv("RFR_MILVUS__URI", "http://milvus:19530")
    monkeypatch.setenv("RFR_MODEL_DIR", "/models")
    monkeypatch.setenv("RFR_EMBED__BATCH_SIZE", "64")
    monkeypatch.setenv("RFR_MATCH__GALLERIES", '["custody", "wanted"]')
    s = load_settings()
    assert s.kafka.bootstrap_servers == "kafka-0:9092,kafka-1:9092"
    assert s.milvus.uri == "http://milvus:19530"
    assert s.model_dir == Path("/models")
    assert s.embed.batch_size == 64
    assert s.match.galleries == ["custody", "wanted"]


def test_invalid_values_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RFR_EMBED__BATCH_SIZE", "0")
    with pytest.raises(ValidationError, match="batch_size"):
        load_settings()


def test_unknown_nested_field_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RFR_KAFKA__BOOTSTRAP_SERVRS", "typo:9092")
    with pytest.raises(ValidationError):
        load_settings()


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(ValidationError):
        s.log_level = "DEBUG"  # type: ignore[misc]


def test_secrets_are_not_printed() -> None:
    s = Settings(kafka={"sasl_password": "hunter2"})  # type: ignore[arg-type]
    assert "hunter2" not in repr(s)
    assert s.kafka.sasl_password is not None
    assert s.kafka.sasl_password.get_secret_value() == "hunter2"


def test_settings_env_reproduces_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from rfr.stack import settings_env

    s = Settings(kafka={"bootstrap_servers": "k:1", "sasl_password": "pw"},  # type: ignore[arg-type]
                 match={"galleries": ["custody", "wanted"], "top_k": 7},  # type: ignore[arg-type]
                 model_dir=tmp_path / "m", blob_dir=tmp_path / "b",
                 stack={"state_dir": tmp_path / "s"})  # type: ignore[arg-type]
    env = settings_env(s)
    assert env["RFR_KAFKA__SASL_PASSWORD"] == "pw"
    for key in list(__import__("os").environ):
        if key.startswith("RFR_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert load_settings() == s
