"""Prometheus metrics shared by the services: ``rfr_<service>_<thing>_<unit>``, no per-person labels."""

from __future__ import annotations

import logging
import platform
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server

from rfr import __version__

logger = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass
class StageMetrics:
    """The figures every stream stage reports; services add their own beside these."""

    service: str
    consumed: Counter
    produced: Counter
    deadletters: Counter
    errors: Counter
    dependency_retries: Counter
    batch_size: Histogram
    process_seconds: Histogram
    inflight: Gauge
    last_commit: Gauge

    @classmethod
    def create(cls, service: str, registry: CollectorRegistry = REGISTRY) -> StageMetrics:
        p = f"rfr_{service}"
        return cls(
            service=service,
            consumed=Counter(f"{p}_messages_consumed_total", "Messages read from Kafka", registry=registry),
            produced=Counter(f"{p}_messages_produced_total", "Messages written", ["topic"], registry=registry),
            deadletters=Counter(
                f"{p}_deadletters_total", "Messages sent to the dead-letter topic", ["reason"], registry=registry
            ),
            errors=Counter(f"{p}_batch_errors_total", "Batches retried after an error", ["kind"], registry=registry),
            dependency_retries=Counter(
                f"{p}_dependency_retries_total", "Batches retried because a dependency was down", ["dependency"],
                registry=registry,
            ),
            batch_size=Histogram(
                f"{p}_batch_messages", "Messages per processed batch", buckets=BATCH_BUCKETS, registry=registry
            ),
            process_seconds=Histogram(
                f"{p}_process_seconds", "Seconds to process one batch", buckets=LATENCY_BUCKETS, registry=registry
            ),
            inflight=Gauge(f"{p}_inflight_messages", "Messages consumed but not yet committed", registry=registry),
            last_commit=Gauge(
                f"{p}_last_commit_timestamp_seconds", "Unix time of the last offset commit", registry=registry
            ),
        )


def build_info(service: str, registry: CollectorRegistry = REGISTRY, **extra: str) -> Info:
    info = Info("rfr_build", "RFR build and runtime", registry=registry)
    info.info({"version": __version__, "python": platform.python_version(), "service": service, **extra})
    return info


def serve_metrics(host: str, port: int, registry: CollectorRegistry = REGISTRY) -> None:
    """Expose ``/metrics``; port 0 disables the endpoint."""
    if port == 0:
        return
    start_http_server(port, addr=host, registry=registry)
    logger.info("metrics on http://%s:%s/metrics", host, port)
