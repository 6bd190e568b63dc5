"""`rfr up` / `status` / `down` start and stop the real broker and milvus-lite server, and nothing else."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from pymilvus import MilvusClient
from support.stack import run_rfr

from rfr.core import kafka
from rfr.core.settings import KafkaSettings
from rfr.core.topics import ALL_TOPICS
from rfr.tools import procs


def _rfr(args: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return run_rfr(args, env, timeout)


def test_up_status_down_servers_only(tmp_path: Path) -> None:
    broker_port, milvus_port = procs.free_port(), procs.free_port()
    env = dict(os.environ,
               RFR_STACK__STATE_DIR=str(tmp_path / "state"),
               RFR_STACK__BROKER_PORT=str(broker_port),
               RFR_STACK__MILVUS_PORT=str(milvus_port),
               RFR_KAFKA__BOOTSTRAP_SERVERS=f"127.0.0.1:{broker_port}",
               RFR_MILVUS__URI=f"http://127.0.0.1:{milvus_port}")
    started = _rfr(["up", "--no-services"], env)
    try:
        assert started.returncode == 0, started.stderr
        infos = procs.StateFile(tmp_path / "state").load()
        assert [i.name for i in infos] == ["broker", "milvus"]
        assert all(procs.pid_alive(i) for i in infos)
        # Both listen on loopback only, and the topics were created explicitly.
        assert procs.port_open("127.0.0.1", broker_port) and procs.port_open("127.0.0.1", milvus_port)
        md = kafka.AdminClient(kafka.client_config(KafkaSettings(bootstrap_servers=f"127.0.0.1:{broker_port}")))
        assert set(ALL_TOPICS) <= set(md.list_topics(timeout=10).topics)
        client = MilvusClient(uri=f"http://127.0.0.1:{milvus_port}")
        assert client.list_collections() == []
        client.close()
        status = _rfr(["status"], env)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "broker" in status.stdout and "milvus" in status.stdout and "healthy" in status.stdout
        again = _rfr(["up", "--no-services"], env)
        assert again.returncode != 0 and "already running" in again.stderr + again.stdout
    finally:
        stopped = _rfr(["down"], env)
    assert stopped.returncode == 0, stopped.stderr
    assert "broker" in stopped.stdout and "milvus" in stopped.stdout
    assert not any(procs.pid_alive(i) for i in infos)
    assert not procs.port_open("127.0.0.1", broker_port)
    assert not (tmp_path / "state" / "stack.json").exists()
    assert "nothing was running" in _rfr(["down"], env).stdout


def test_service_waits_for_a_late_broker_and_recovers(tmp_path: Path) -> None:
    """Broker unreachable at start: the service retries with backoff, logs it, and runs once the broker is up."""
    broker_port, metrics_port = procs.free_port(), procs.free_port()
    env = dict(os.environ, RFR_KAFKA__BOOTSTRAP_SERVERS=f"127.0.0.1:{broker_port}",
               RFR_METRICS__DETECT_PORT=str(metrics_port), RFR_BLOB_DIR=str(tmp_path / "blobs"))
    service, service_proc = procs.spawn("detect", [sys.executable, "-m", "services.detect"], tmp_path, env)
    broker_proc = None
    try:
        time.sleep(7)  # the service is up and retrying (each metadata request waits up to 5 s)
        assert service_proc.poll() is None, Path(service.log).read_text()
        _, broker_proc = procs.spawn("tansu", procs.tansu_argv(broker_port), tmp_path)
        procs.wait_port("127.0.0.1", broker_port, 20, broker_proc)
        ks = KafkaSettings(bootstrap_servers=f"127.0.0.1:{broker_port}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # recovered: it created the topics and consumes
            topics = set(kafka.AdminClient(kafka.client_config(ks)).list_topics(timeout=5).topics)
            if set(ALL_TOPICS) <= topics:
                break
            time.sleep(0.5)
        assert set(ALL_TOPICS) <= topics
        assert service_proc.poll() is None
        log = Path(service.log).read_text()
        assert "not reachable yet" in log and "retrying in" in log
    finally:
        service_proc.terminate()
        try:
            exit_code = service_proc.wait(30)
        finally:  # the broker goes even when the service did not stop in time
            if broker_proc is not None:
                broker_proc.terminate()
                broker_proc.wait(10)
    assert exit_code == 0  # graceful SIGTERM exit
