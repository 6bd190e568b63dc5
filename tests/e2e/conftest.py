"""The whole local stack (`rfr up`) on free loopback ports in a temporary state dir, once per test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.stack import free_stack_settings

from rfr.core.settings import Settings
from rfr.tools import stack


@pytest.fixture(scope="session")
def live_stack(tmp_path_factory: pytest.TempPathFactory, model_dir: Path, lfw_dir: Path) -> Iterator[Settings]:
    settings = free_stack_settings(tmp_path_factory.mktemp("stack"), model_dir)
    stack.up(settings)
    try:
        yield settings
    finally:
        stopped = stack.down(settings)
        assert set(stopped) == {"broker", "milvus", *stack.SERVICES}
