"""``python -m services.ingest``: everything ingest needs, in one process.

* the Kafka channel: :class:`SubmissionHandler` on the submissions topic, run by :func:`rfr.core.stage.run_stage`
  (service ``ingest``, group ``rfr-ingest``) in the main thread, which owns SIGTERM/SIGINT;
* the HTTP channel: the FastAPI app on ``settings.ingest.http_host:http_port`` (uvicorn, a thread);
* the status consumer: :class:`StatusHandler` on the outcomes topic (group ``rfr-ingest-status``, a thread).

When the Kafka loop stops (signal), the HTTP server and the status consumer are stopped too. Exit codes:
0 clean stop, 2 bad API key configuration, 3 the HTTP port could not be opened, 4 the submission store
(``settings.ingest.database_url``, else the SQLite file ``db_path``) could not be opened or migrated.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from rfr.core import db, http_thread, kafka
from rfr.core.blobstore import FileBlobStore
from rfr.core.http_thread import Background
from rfr.core.imaging import ImageLimits
from rfr.core.logs import setup_logging
from rfr.core.settings import Settings, settings_or_exit
from rfr.core.stage import StageSpec, build_processor, run_stage
from rfr.core.stream import BatchHandler, StreamProcessor
from rfr.core.topics import OUTCOMES, SUBMISSIONS, Topics
from services.ingest.accept import Ingestor
from services.ingest.app import HttpContext, create_app
from services.ingest.auth import ApiKeyConfigError, ApiKeyRegistry
from services.ingest.handler import SubmissionHandler
from services.ingest.metrics import IngestMetrics
from services.ingest.publish import Publisher
from services.ingest.status import STATUS_GROUP, STATUS_SERVICE, StatusHandler
from services.ingest.store import SqlSubmissionStore, StoreUnavailable, SubmissionStore

logger = logging.getLogger(__name__)

SERVICE = "ingest"
GROUP = "rfr-ingest"
EXIT_BAD_KEYS = 2
EXIT_NO_HTTP = 3
EXIT_NO_STORE = 4


def db_path(settings: Settings) -> Path:
    """The SQLite file of the submission store when no ``database_url`` is set."""
    return settings.ingest.db_path or settings.stack.state_dir / "ingest.db"


def store_url(settings: Settings) -> str:
    """The submission store's database: ``settings.ingest.database_url``, else the SQLite file :func:`db_path`."""
    return settings.ingest.database_url or db.sqlite_url(db_path(settings))


def stage_spec(settings: Settings) -> StageSpec:
    return StageSpec(service=SERVICE, group=GROUP, inputs=[SUBMISSIONS], metrics_port=settings.metrics.ingest_port,
                     batch_size=settings.ingest.batch_size, batch_timeout_ms=5)  # stills queue under load


def build_ingestor(settings: Settings, topics: Topics, store: SubmissionStore,
                   metrics: IngestMetrics) -> Ingestor:
    limits = ImageLimits.from_settings(settings.ingest)
    return Ingestor(topics, store, FileBlobStore(settings.blob_dir), metrics, limits, settings.ingest.inline_max_bytes)


def start_http(settings: Settings, ctx: HttpContext, timeout_s: float = 20.0) -> Background:
    """Serve the HTTP channel in a thread; raise OSError when it does not come up."""
    return http_thread.start_http(create_app(ctx), settings.ingest.http_host, settings.ingest.http_port,
                                  label="HTTP channel", thread_name="ingest-http", name="http", timeout_s=timeout_s)


def status_processor(settings: Settings, topics: Topics, handler: StatusHandler) -> StreamProcessor:
    spec = StageSpec(STATUS_SERVICE, STATUS_GROUP, [OUTCOMES], metrics_port=0, batch_size=64, batch_timeout_ms=50,
                     failed_outcomes=False)
    return build_processor(settings, spec, topics, handler)


def start_status(settings: Settings, topics: Topics, handler: StatusHandler) -> Background:
    processor = status_processor(settings, topics, handler)
    thread = threading.Thread(target=processor.run, name="ingest-status", daemon=True)
    thread.start()
    return Background("status consumer", thread, processor.stopping.set)


def main() -> int:
    settings = settings_or_exit("rfr-ingest")
    setup_logging(settings.log_level, json_lines=settings.log_json, service=SERVICE)
    try:
        keys = ApiKeyRegistry.from_settings(settings)
    except (ApiKeyConfigError, OSError) as exc:
        logger.error("ingest cannot start: API keys: %s", exc)
        return EXIT_BAD_KEYS
    if not len(keys):
        logger.warning("no API keys configured: the HTTP channel will refuse every request "
                       "(create one with `rfr api-keys create RETAILER`)")
    try:
        store = SqlSubmissionStore(store_url(settings))
    except (StoreUnavailable, ValueError, OSError) as exc:
        logger.error("ingest cannot start: submission store: %s", exc)
        return EXIT_NO_STORE
    metrics = IngestMetrics.create()
    topics = Topics.from_settings(settings.kafka)
    ingestor = build_ingestor(settings, topics, store, metrics)
    kafka.prepare_broker(settings.kafka)
    publisher = Publisher(kafka.make_producer(settings.kafka))
    ctx = HttpContext(ingestor, keys, publisher, settings.ingest.max_files_per_request,
                      settings.ingest.max_request_bytes)
    background: list[Background] = [start_status(settings, topics, StatusHandler(store, metrics))]
    try:
        background.append(start_http(settings, ctx))
    except OSError as exc:
        logger.error("ingest cannot start: %s", exc)
        background[0].close()
        return EXIT_NO_HTTP

    def make_handler(_settings: Settings, _topics: Topics) -> BatchHandler:
        return SubmissionHandler(ingestor)

    try:
        run_stage(settings, stage_spec(settings), make_handler, broker_ready=True)
    finally:
        for bg in reversed(background):
            bg.close()
        publisher.close()
        store.close()
    return 0
