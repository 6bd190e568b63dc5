"""Components a service runs in threads beside its Kafka loop, and an ASGI app served by uvicorn in one of them."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
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
               access_log: bool = True, timeout_s: float = 20.0,
               trusted_proxies: Sequence[str] | None = None) -> Background:
    """Serve ``app`` on ``host:port`` with uvicorn in a daemon thread called ``thread_name`` (no lifespan, the
    caller's logging); raise OSError when it has not started within ``timeout_s``. ``label`` names the server in
    the log and the error; the :class:`Background` returned is called ``name`` (default: ``label``).
    ``trusted_proxies``: None keeps uvicorn's default (X-Forwarded-For believed from 127.0.0.1); a list: believed
    only from those addresses or networks, and not at all when it is empty (the client is the TCP peer)."""
    proxies: dict[str, Any] = {}
    if trusted_proxies is not None:
        proxies = {"proxy_headers": bool(trusted_proxies), "forwarded_allow_ips": list(trusted_proxies) or None}
    config = uvicorn.Config(app, host=host, port=port, log_config=None, lifespan="off", access_log=access_log,
                            **proxies)
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
