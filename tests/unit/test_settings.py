from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from rfr.core.settings import Settings, load_settings, settings_or_exit
from rfr.core.settings_errors import SettingsError


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
    monkeypatch.setenv("RFR_MATCH__WATCH_LISTS", '["custody", "wanted"]')
    s = load_settings()
    assert s.kafka.bootstrap_servers == "kafka-0:9092,kafka-1:9092"
    assert s.milvus.uri == "http://milvus:19530"
    assert s.model_dir == Path("/models")
    assert s.embed.batch_size == 64
    assert s.match.watch_lists == ["custody", "wanted"]


def test_invalid_values_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RFR_EMBED__BATCH_SIZE", "0")
    with pytest.raises(SettingsError, match=r"RFR_EMBED__BATCH_SIZE=0: .*\(allowed: >= 1\)"):
        load_settings()


def test_unknown_nested_field_is_rejected_with_a_suggestion(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RFR_KAFKA__BOOTSTRAP_SERVRS", "typo:9092")
    with pytest.raises(SettingsError, match="RFR_KAFKA__BOOTSTRAP_SERVRS: no such setting; did you mean "
                                            "RFR_KAFKA__BOOTSTRAP_SERVERS"):
        load_settings()


def test_a_renamed_setting_names_its_new_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RFR_DETECT__GATE_MIN_BLUR", "150")
    monkeypatch.setenv("RFR_MATCH__GALLERIES", '["custody"]')
    with pytest.raises(SettingsError) as caught:
        load_settings()
    text = str(caught.value)
    assert "RFR_DETECT__GATE_MIN_BLUR: no such setting; it was renamed RFR_DETECT__GATE_MIN_SHARPNESS" in text
    assert "RFR_MATCH__GALLERIES: no such setting; it was renamed RFR_MATCH__WATCH_LISTS" in text


def test_a_percentage_threshold_names_the_variable_the_range_and_the_unit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RFR_MATCH__THRESHOLD", "60")
    monkeypatch.setenv("RFR_EMBED__DEVICE", "gpu")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    lines = str(caught.value).splitlines()
    assert len(lines) == 2  # one line per bad variable
    threshold = next(line for line in lines if line.startswith("RFR_MATCH__THRESHOLD=60: "))
    assert "(allowed: >= -1.0 and <= 1.0)" in threshold and "cosine similarity in [-1, 1]" in threshold
    assert "RFR_EMBED__DEVICE=gpu: " in str(caught.value) and "(allowed: auto, cpu, cuda)" in str(caught.value)


def test_settings_or_exit_prints_one_message_and_exits_2(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RFR_MATCH__THRESHOLD", "60")
    with pytest.raises(SystemExit) as caught:
        settings_or_exit("rfr-match")
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("rfr-match: invalid settings\nRFR_MATCH__THRESHOLD=60: ") and "Traceback" not in err


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
    from rfr.tools.stack import settings_env

    s = Settings(kafka={"bootstrap_servers": "k:1", "sasl_password": "pw"},  # type: ignore[arg-type]
                 match={"watch_lists": ["custody", "wanted"], "top_k": 7},  # type: ignore[arg-type]
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


def test_topics_may_not_keep_images_longer_than_the_shortest_purge(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RFR_KAFKA__RETENTION_MS", str(10 * 86_400_000))  # dead letters: 4 x 10 = 40 days > 31
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert str(err.value).startswith("RFR_KAFKA__RETENTION_MS=864000000 keeps images 40 days")
    assert "RFR_RETENTION__*_DAYS" in str(err.value) and "Value error" not in str(err.value)
    monkeypatch.setenv("RFR_RETENTION__NO_CANDIDATE_DAYS", "40")
    monkeypatch.setenv("RFR_RETENTION__NO_LEAD_DAYS", "40")
    assert load_settings().kafka.retention_ms == 10 * 86_400_000  # raising the purge days makes it consistent
