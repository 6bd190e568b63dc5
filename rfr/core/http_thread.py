"""Components a service runs in threads beside its Kafka loop, and an ASGI app served by uvicorn in one of them."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import uvicorn

logger = logging.getLogger(__name__)


@dataclass
class Background:
    """A component running in its own thread, with the way to stop it."""

    name: str
    thread: threading.Thread
    stop: Callable[[], None]

    def close(self, timeout_s: float = 15.0) -> None:
        self.stop()
        self.thread.join(timeout_s)
        if self.thread.is_alive():
            logger.warning("%s did not stop within %.0fs", self.name, timeout_s)


def start_http(app: Callable[..., Any], host: str, port: int, *, label: str, thread_name: str, name: str | None = None,
               access_log: bool = True, timeout_s: float = 20.0) -> Background:
    """Serve ``app`` on ``host:port`` with uvicorn in a daemon thread called ``thread_name`` (no lifespan, the
    caller's logging); raise OSError when it has not started within ``timeout_s``. ``label`` names the server in
    the log and the error; the :class:`Background` returned is called ``name`` (default: ``label``)."""
    config = uvicorn.Config(app, host=host, port=port, log_config=None, lifespan="off", access_log=access_log)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=thread_name, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise OSError(f"{label} did not start on {host}:{port}")
        time.sleep(0.05)
    logger.info("%s on http://%s:%s (OpenAPI at /docs)", label, host, port)

    def stop() -> None:
        server.should_exit = True

    return Background(name or label, thread, stop)
