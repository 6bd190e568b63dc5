"""Start-up shared by the four stream services: logging, metrics, broker wait, topics, the processing loop."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

from rfr.core import kafka
from rfr.core.metrics import StageMetrics, build_info, serve_metrics
from rfr.core.settings import Settings
from rfr.core.stream import BatchHandler, StreamConfig, StreamProcessor
from rfr.core.topics import Topics

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageSpec:
    """What one service consumes and how it batches."""

    service: str
    group: str
    inputs: list[str]  # base topic names from rfr.core.topics (e.g. FRAMES); the namespace is applied here
    metrics_port: int
    batch_size: int = 32
    batch_timeout_ms: int = 50
    failed_outcomes: bool = True  # a dead-lettered event also gets a ``failed`` outcome (not for outcome consumers)


def build_processor(settings: Settings, spec: StageSpec, topics: Topics, handler: BatchHandler) -> StreamProcessor:
    """The at-least-once loop for ``spec``: its consumer group, a delivery-checked producer, its metrics."""
    return StreamProcessor(
        StreamConfig(
            spec.service,
            [topics.name(t) for t in spec.inputs],
            topics.deadletter,
            spec.batch_size,
            spec.batch_timeout_ms / 1000,
            retry_backoff_s=settings.stream.retry_backoff_s,
            max_backoff_s=settings.stream.max_backoff_s,
            max_attempts=settings.stream.max_attempts,
            outcomes_topic=topics.outcomes if spec.failed_outcomes else None,
            max_message_bytes=settings.kafka.message_max_bytes,
        ),
        kafka.make_consumer(settings.kafka, spec.group),
        kafka.DeliveryTracker(kafka.make_producer(settings.kafka)),
        handler,
        StageMetrics.create(spec.service),
    )


def run_stage(
    settings: Settings,
    spec: StageSpec,
    make_handler: Callable[[Settings, Topics], BatchHandler],
    *,
    broker_timeout_s: float = 120.0,
    broker_ready: bool = False,
) -> None:
    """Run one service until SIGTERM/SIGINT; returns after a clean shutdown (exit code 0).

    The caller has set up logging (``rfr.core.logs.setup_logging``) in its ``main()``. ``broker_ready``: the caller
    has already waited for the broker and ensured the topics (:func:`rfr.core.kafka.prepare_broker`).
    """
    _exit_on_signal_until_consuming()
    build_info(spec.service)
    serve_metrics(settings.metrics.host, spec.metrics_port)
    if not broker_ready:
        kafka.prepare_broker(settings.kafka, broker_timeout_s)
    topics = Topics.from_settings(settings.kafka)
    handler = make_handler(settings, topics)
    processor = build_processor(settings, spec, topics, handler)
    processor.install_signal_handlers()
    try:
        processor.run()
    finally:
        close = getattr(handler, "close", None)
        if callable(close):
            close()


def _exit_on_signal_until_consuming() -> None:
    """SIGTERM/SIGINT while waiting for the broker or loading a model: nothing was consumed yet, so exit 0 at once.

    :meth:`StreamProcessor.install_signal_handlers` replaces this once the loop starts (finish the batch in hand).
    """

    def _exit(signum: int, _frame: FrameType | None) -> None:
        logger.info("signal %s before consuming anything: exiting", signum)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGINT, _exit)
