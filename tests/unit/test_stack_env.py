"""The environment `rfr up` gives each service of the local stack."""

from __future__ import annotations

from pathlib import Path

import pytest

from rfr.core.settings import Settings
from rfr.tools.stack import LOCAL_EMBED_THREADS, plan, service_env


def test_local_embed_runs_on_one_thread_unless_told(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RFR_EMBED__THREADS", raising=False)
    settings = Settings(stack={"state_dir": tmp_path})
    assert settings.embed.threads != LOCAL_EMBED_THREADS  # the default is for a machine of its own
    env = service_env(settings, plan(settings))
    assert env["RFR_EMBED__THREADS"] == str(LOCAL_EMBED_THREADS)
    assert env["RFR_STACK__STATE_DIR"] == str(tmp_path.resolve())
    monkeypatch.setenv("RFR_EMBED__THREADS", "3")
    settings = Settings(stack={"state_dir": tmp_path})
    assert service_env(settings, plan(settings))["RFR_EMBED__THREADS"] == "3"
