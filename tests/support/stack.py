"""The ``rfr`` CLI run as a user runs it, and the whole local stack on free loopback ports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from rfr.core.settings import Settings
from rfr.tools import procs, stack


def free_stack_settings(state_dir: Path, model_dir: Path) -> Settings:
    broker, milvus = procs.free_port(), procs.free_port()
    return Settings(
        model_dir=model_dir,
        blob_dir=state_dir / "blobs",
        kafka={"bootstrap_servers": f"127.0.0.1:{broker}"},  # type: ignore[arg-type]
        milvus={"uri": f"http://127.0.0.1:{milvus}"},  # type: ignore[arg-type]
        stack={"state_dir": state_dir, "broker_port": broker, "milvus_port": milvus},  # type: ignore[arg-type]
        metrics={f"{s}_port": procs.free_port() for s in stack.SERVICES},  # type: ignore[arg-type]
        ingest={"http_port": procs.free_port()},  # type: ignore[arg-type]
        review={"http_port": procs.free_port(), "checkpoint_interval_s": 5.0},  # type: ignore[arg-type]
        cluster={"web_port": procs.free_port()},  # type: ignore[arg-type]  # faust's own web server
    )


def run_rfr(args: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the `rfr` CLI in a fresh interpreter with the environment ``env``; its output is captured."""
    return subprocess.run([sys.executable, "-m", "rfr", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def rfr_cli(settings: Settings, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the `rfr` CLI against ``settings`` (as a user would, with the RFR_ environment)."""
    return run_rfr(list(args), dict(os.environ) | stack.settings_env(settings), timeout)
