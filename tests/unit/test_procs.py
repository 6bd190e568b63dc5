"""rfr.tools.procs: which recorded process still runs (pid reuse, zombies), stopping it and its children, and the
state file (including one written before psutil, with ``start_ticks``)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from rfr.tools import procs

SLEEP = [sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(60)"]
IGNORES_TERM = [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "print('ready', flush=True); time.sleep(60)"]
WITH_CHILD = [sys.executable, "-c", "import subprocess, sys, time; "
              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
              "print('ready', flush=True); time.sleep(60)"]


@pytest.fixture
def spawned(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def _start(argv: list[str], tmp_path: Path, started: list[subprocess.Popen[bytes]]) -> procs.ProcInfo:
    info, proc = procs.spawn(f"p{len(started)}", argv, tmp_path)
    started.append(proc)
    deadline = time.monotonic() + 30
    while "ready" not in Path(info.log).read_text() and proc.poll() is None:
        assert time.monotonic() < deadline, "the test process did not start"
        time.sleep(0.02)
    return info


def _start_ticks(pid: int) -> int:
    """The start time of ``pid`` in clock ticks after boot, as /proc/<pid>/stat gives it (field 22)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


def test_a_spawned_process_is_alive_and_its_start_recorded(tmp_path: Path,
                                                            spawned: list[subprocess.Popen[bytes]]) -> None:
    info = _start(SLEEP, tmp_path, spawned)
    assert info.started_after_boot_s == pytest.approx(_start_ticks(info.pid) / os.sysconf("SC_CLK_TCK"), abs=1e-3)
    assert procs.pid_alive(info)


def test_a_reused_pid_is_not_ours_and_is_not_signalled(tmp_path: Path,
                                                       spawned: list[subprocess.Popen[bytes]]) -> None:
    info = _start(SLEEP, tmp_path, spawned)
    stranger = dataclasses.replace(info, started_after_boot_s=info.started_after_boot_s - 0.05)  # 5 ticks earlier
    assert not procs.pid_alive(stranger)
    assert procs.stop(stranger) is False
    assert spawned[0].poll() is None  # the running process was left alone


def test_an_exited_unreaped_process_counts_as_gone(tmp_path: Path,
                                                   spawned: list[subprocess.Popen[bytes]]) -> None:
    info, proc = procs.spawn("quick", [sys.executable, "-c", "pass"], tmp_path)
    spawned.append(proc)
    deadline = time.monotonic() + 30
    while psutil.Process(proc.pid).status() != psutil.STATUS_ZOMBIE:  # exited; nobody has reaped it yet
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert not procs.pid_alive(info)
    assert procs.stop(info) is False


def test_stop_terminates_the_process_and_the_children_it_leaves(
        tmp_path: Path, spawned: list[subprocess.Popen[bytes]]) -> None:
    info = _start(WITH_CHILD, tmp_path, spawned)
    [child] = psutil.Process(info.pid).children()
    assert procs.stop(info, timeout_s=10) is False
    assert not procs.pid_alive(info)
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE


def test_stop_kills_what_ignores_sigterm(tmp_path: Path, spawned: list[subprocess.Popen[bytes]]) -> None:
    info = _start(IGNORES_TERM, tmp_path, spawned)
    t0 = time.monotonic()
    assert procs.stop(info, timeout_s=0.5) is True
    assert time.monotonic() - t0 < 10
    assert not procs.pid_alive(info)


def test_state_file_round_trip(tmp_path: Path, spawned: list[subprocess.Popen[bytes]]) -> None:
    info = _start(SLEEP, tmp_path, spawned)
    state = procs.StateFile(tmp_path / "state")
    state.save([info])
    assert state.load() == [info]
    assert "start_ticks" not in json.loads(state.path.read_text())[0]
    state.clear()
    assert state.load() == []


def test_a_state_file_from_before_psutil_is_migrated(tmp_path: Path,
                                                     spawned: list[subprocess.Popen[bytes]]) -> None:
    info = _start(SLEEP, tmp_path, spawned)
    ticks = _start_ticks(info.pid)  # what the old bookkeeping recorded
    old = {k: v for k, v in dataclasses.asdict(info).items() if k != "started_after_boot_s"} | {"start_ticks": ticks}
    state = procs.StateFile(tmp_path / "state")
    state.path.parent.mkdir()
    state.path.write_text(json.dumps([old]))
    [loaded] = state.load()
    assert loaded.started_after_boot_s == pytest.approx(info.started_after_boot_s, abs=1e-3)
    assert procs.pid_alive(loaded)
    old_stranger = old | {"start_ticks": ticks - 5}  # a process started 5 ticks (50 ms) earlier
    state.path.write_text(json.dumps([old_stranger]))
    assert not procs.pid_alive(state.load()[0])
