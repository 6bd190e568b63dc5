"""`rfr demo --keep` (issue 15): demo accounts made in the demo stack's review database with random passwords that
sign in; the kept stack recorded where `rfr down` and `rfr status` look; a running stack refuses a new demo."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rfr.core.db import make_engine
from rfr.core.settings import Settings, review_database_url, review_secret
from rfr.review.audit import AuditLog
from rfr.review.users import UserStore
from rfr.tools import demo, procs, stack


def _settings(tmp_path: Path) -> Settings:
    return Settings(stack={"state_dir": tmp_path / "rfr"}, blob_dir=tmp_path / "blobs")


def test_demo_accounts_sign_in_with_their_printed_passwords(tmp_path: Path) -> None:
    settings = demo.demo_settings(_settings(tmp_path))
    accounts = demo.demo_accounts(settings)
    assert [(name, role) for name, role, _ in accounts] == list(demo.DEMO_ACCOUNTS)
    assert len({pw for _, _, pw in accounts}) == len(accounts) and all(len(pw) >= 12 for _, _, pw in accounts)
    assert review_database_url(settings).endswith("/demo/stack/review.db")  # the demo's own stack, not the user's
    engine = make_engine(review_database_url(settings))
    try:
        users = UserStore(engine, AuditLog(engine, review_secret(settings), 1000), session_ttl_s=60)
        for name, role, password in accounts:
            who = users.authenticate(name, password)
            assert who is not None and (who.name, str(who.role)) == (name, role)
            assert users.authenticate(name, password + "x") is None
    finally:
        engine.dispose()


def test_the_kept_stack_is_what_rfr_down_stops(tmp_path: Path) -> None:
    own = _settings(tmp_path)
    kept = demo.demo_settings(own)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        info = procs.ProcInfo("review", sleeper.pid, ["sleep"], str(tmp_path / "review.log"))
        procs.StateFile(stack.plan(kept).state_dir).save([info])
        demo.hand_over(own, kept)
        assert demo.running_from(own) == ["review"]
        env = dict(os.environ) | {"RFR_STACK__STATE_DIR": str(own.stack.state_dir)}
        refused = CliRunner().invoke(demo.app, ["--data", str(tmp_path)], env=env)
        assert refused.exit_code == 1 and "`rfr down` first" in refused.output, refused.output
        assert stack.down(own) == ["review"]
        sleeper.wait(10)
        assert demo.running_from(own) == []
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()


@pytest.mark.parametrize("flag", ["--keep", "--no-keep"])
def test_keep_is_an_option_of_the_demo(flag: str) -> None:
    result = CliRunner().invoke(demo.app, ["--help"])
    assert result.exit_code == 0 and flag in result.output
