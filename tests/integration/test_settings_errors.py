"""A bad setting stops every entry point with one short message and exit status 2, never a traceback:
`rfr restart match` (the CLI) and `python -m services.match` (a service, as `rfr up` starts it)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("argv", [
    [sys.executable, "-m", "rfr", "restart", "match"],
    [sys.executable, "-m", "services.match"],
    [sys.executable, "-m", "services.detect"],
])
def test_a_percentage_threshold_is_one_line_and_exit_2(argv: list[str], tmp_path: os.PathLike[str]) -> None:
    env = dict(os.environ, RFR_MATCH__THRESHOLD="60", RFR_STACK__STATE_DIR=str(tmp_path))
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 2, done.stderr  # "<program>: invalid settings" and the variable's own line
    assert lines[1].startswith("RFR_MATCH__THRESHOLD=60: ") and "cosine similarity in [-1, 1]" in lines[1]
