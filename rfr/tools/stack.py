"""`rfr up` / `rfr down` / `rfr status`: the embedded local stack on 127.0.0.1.

A broker and a milvus-lite server are started only when the settings point at the local defaults; pointing
``RFR_KAFKA__BOOTSTRAP_SERVERS`` / ``RFR_MILVUS__URI`` elsewhere uses those instead, with no code change.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, SecretStr

from rfr.core import kafka
from rfr.core.settings import Settings
from rfr.tools import procs

logger = logging.getLogger(__name__)

SERVICES = ("ingest", "detect", "embed", "match", "review", "cluster")
"""Started in this order (stopped in reverse); cluster (repeat unknown offenders) reads what match writes."""


@dataclass(frozen=True)
class StackPlan:
    state_dir: Path
    local_broker: bool
    local_milvus: bool


def plan(settings: Settings) -> StackPlan:
    st = settings.stack
    return StackPlan(
        state_dir=st.state_dir.resolve(),
        local_broker=settings.kafka.bootstrap_servers in (f"127.0.0.1:{st.broker_port}", f"localhost:{st.broker_port}"),
        local_milvus=settings.milvus.uri.rstrip("/")
        in (f"http://127.0.0.1:{st.milvus_port}", f"http://localhost:{st.milvus_port}"),
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """``RFR_*`` variables that reproduce ``settings`` in a child process (paths made absolute)."""
    env: dict[str, str] = {}

    def put(name: str, value: object) -> None:
        if value is None:
            return
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, Path):
            value = str(value.resolve())
        elif isinstance(value, (list, dict)):
            value = json.dumps(value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        env[name] = str(value)

    for field, value in settings:
        if isinstance(value, BaseModel):
            for sub, subvalue in value:
                put(f"RFR_{field.upper()}__{sub.upper()}", subvalue)
        else:
            put(f"RFR_{field.upper()}", value)
    return env


LOCAL_EMBED_THREADS = 1
"""torch threads of the local stack's embed service, unless RFR_EMBED__THREADS is set."""


def service_env(settings: Settings, p: StackPlan) -> dict[str, str]:
    """The environment every service process gets: the caller's, with these settings made explicit."""
    env = dict(os.environ)
    env.update(settings_env(settings))
    if "RFR_EMBED__THREADS" not in os.environ:
        # every service shares this machine's cores: embed on 1 torch thread gave 12 % more stills/s than on 2,
        # at a third of the CPU per still (docs/benchmarks.md, whole stack)
        env["RFR_EMBED__THREADS"] = str(LOCAL_EMBED_THREADS)
    env["RFR_STACK__STATE_DIR"] = str(p.state_dir)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _metrics_port(settings: Settings, name: str) -> int:
    return int(getattr(settings.metrics, f"{name}_port"))


def up(
    settings: Settings, *, services: tuple[str, ...] = SERVICES, ready_timeout_s: float = 180.0
) -> list[procs.ProcInfo]:
    """Start the local servers the settings call for, create the topics, start the services, wait until ready."""
    p = plan(settings)
    state = procs.StateFile(p.state_dir)
    running = [i for i in state.load() if procs.pid_alive(i)]
    if running:
        raise procs.StackError(
            f"a stack is already running from {p.state_dir} "
            f"({', '.join(i.name for i in running)}); run `rfr down` first"
        )
    started: list[procs.ProcInfo] = []
    try:
        _start_servers(settings, p, state, started)
        kafka.prepare_broker(settings.kafka, 60)
        for name in services:
            started.append(start_service(settings, name))
            state.save(started)
        _wait_ready(settings, started, ready_timeout_s)
    except BaseException:
        logger.error("start-up failed; stopping what was started (logs in %s)", p.state_dir / "logs")
        down_procs(started)
        state.clear()
        raise
    return started


def _start_servers(settings: Settings, p: StackPlan, state: procs.StateFile, started: list[procs.ProcInfo]) -> None:
    logs = p.state_dir / "logs"
    st = settings.stack
    if p.local_broker:
        started.append(_start_server("broker", procs.tansu_argv(st.broker_port), logs, st.broker_port, state, started))
    if p.local_milvus:
        argv = procs.milvus_argv(p.state_dir / "milvus", st.milvus_port)
        started.append(_start_server("milvus", argv, logs, st.milvus_port, state, started))


def start_service(settings: Settings, name: str) -> procs.ProcInfo:
    """Start one service process (``python -m services.<name>``) with the stack's environment."""
    if name not in SERVICES:
        raise procs.StackError(f"unknown service {name!r}; expected one of {', '.join(SERVICES)}")
    p = plan(settings)
    port = _metrics_port(settings, name)
    url = f"http://{settings.metrics.host}:{port}/metrics"
    argv = [sys.executable, "-m", f"services.{name}"]
    info, _ = procs.spawn(name, argv, p.state_dir / "logs", service_env(settings, p), port, url)
    return info


def restart_service(settings: Settings, name: str, ready_timeout_s: float = 180.0) -> procs.ProcInfo:
    """Stop (if running) and start again one service of the running stack; the state file follows."""
    state = procs.StateFile(plan(settings).state_dir)
    infos = state.load()
    for info in infos:
        if info.name == name:
            procs.stop(info)
    fresh = start_service(settings, name)
    state.save([i for i in infos if i.name != name] + [fresh])
    _wait_ready(settings, [fresh], ready_timeout_s)
    return fresh


def _start_server(
    name: str, argv: list[str], logs: Path, port: int, state: procs.StateFile, started: list[procs.ProcInfo]
) -> procs.ProcInfo:
    if procs.port_open("127.0.0.1", port):
        raise procs.StackError(f"port {port} for the {name} is already in use")
    info, proc = procs.spawn(name, argv, logs, port=port)
    state.save([*started, info])
    procs.wait_port("127.0.0.1", port, 60, proc)
    return info


def _wait_ready(settings: Settings, started: list[procs.ProcInfo], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for info in started:
        if info.metrics_url is None or info.port is None:
            continue
        while not procs.port_open(settings.metrics.host, info.port):
            if not procs.pid_alive(info):
                tail = Path(info.log).read_text(errors="replace")[-2000:]
                raise procs.StackError(f"{info.name} exited during start-up; last log lines:\n{tail}")
            if time.monotonic() > deadline:
                raise procs.StackError(f"{info.name} not ready after {timeout_s:.0f}s (log: {info.log})")
            time.sleep(0.2)


def down_procs(infos: list[procs.ProcInfo]) -> list[str]:
    """Stop services first, servers last; return the names that were running."""
    stopped = []
    for info in reversed(infos):
        if procs.pid_alive(info):
            procs.stop(info)
            stopped.append(info.name)
    return stopped


def down(settings: Settings) -> list[str]:
    state = procs.StateFile(plan(settings).state_dir)
    stopped = down_procs(state.load())
    state.clear()
    return stopped
