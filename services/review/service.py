"""``python -m services.review``: the review service, in one process.

* the review store (``review.database_url``, else SQLite ``<stack.state_dir>/review.db``), migrated on start;
  the policy in force (match threshold, top_k, watch-lists, retention, two-person) is recorded, and a change from
  the last one recorded is audited as a ``policy_change``;
* the stream handler (:class:`ReviewHandler`) on the matches, gallery and clusters topics (group ``rfr-review``), run
  by :func:`rfr.core.stage.run_stage` in the main thread, which owns SIGTERM/SIGINT;
* the API (FastAPI on ``review.http_host:http_port``, uvicorn, a thread);
* threads: the decision publisher (every ``review.publish_interval_s``, and at once after a final decision), the
  retention pass (first shortly after start, then every ``retention.interval_s``), the signed audit checkpoint
  (every ``review.checkpoint_interval_s`` and once at shutdown), and the queue gauges.

SIGTERM: the batch in hand is finished, the API stops, pending decisions are published once more, a last audit
checkpoint is signed, exit 0. A SIGKILL loses nothing: offsets are committed only after the store recorded the
batch (each list once, by event id), and the outbox keeps decisions until the broker acknowledged them.
Exit codes: 0 clean stop, 2 invalid settings, 3 the API port could not be opened, 4 the store or its secret could
not be opened or migrated.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from alembic.util import CommandError
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from rfr.core import db, http_thread, kafka
from rfr.core.blobstore import BlobStore, FileBlobStore
from rfr.core.http_thread import Background
from rfr.core.logs import setup_logging
from rfr.core.review_messages import GalleryChange
from rfr.core.schemas import utcnow
from rfr.core.settings import Settings, gallery_blob_dir, review_database_url, review_secret, settings_or_exit
from rfr.core.stage import StageSpec, run_stage
from rfr.core.stream import BatchHandler
from rfr.core.topics import CLUSTERS, GALLERY, MATCHES, Topics
from rfr.review.audit import AuditLog
from rfr.review.research import re_search, re_search_clusters
from rfr.review.store import SYSTEM_ACTOR, ReviewStore
from rfr.review.users import UserStore
from services.review.app import create_app
from services.review.context import ApiContext
from services.review.handler import ClusterReSearch, ReSearch, ReviewHandler
from services.review.jobs import RetentionJob
from services.review.metrics import ReviewMetrics, stats_refresher
from services.review.outages import ping
from services.review.periodic import Periodic
from services.review.publisher import OutboxPublisher

logger = logging.getLogger(__name__)

SERVICE = "review"
GROUP = "rfr-review"
EXIT_NO_HTTP = 3
EXIT_NO_STORE = 4
RETENTION_FIRST_DELAY_S = 15.0
GAUGE_INTERVAL_S = 10.0


def stage_spec(settings: Settings) -> StageSpec:
    return StageSpec(service=SERVICE, group=GROUP, inputs=[MATCHES, GALLERY, CLUSTERS],
                     metrics_port=settings.metrics.review_port, batch_size=settings.review.batch_size,
                     batch_timeout_ms=50, failed_outcomes=False)


def current_policy(settings: Settings) -> dict[str, Any]:
    """The policy in force, as audited on change: what is searched and how, how long probes are kept, and whether
    two people must agree."""
    return {"match": {"threshold": settings.match.threshold, "top_k": settings.match.top_k,
                      "watch_lists": list(settings.match.watch_lists)},
            "retention": settings.retention.model_dump(mode="json"),
            "two_person": settings.review.two_person, "re_search": settings.review.re_search}


@dataclass
class Review:
    """The opened review database: engine, audit log, case store, users."""

    engine: Engine
    audit: AuditLog
    store: ReviewStore
    users: UserStore


def open_review(settings: Settings) -> Review:
    """Open (and migrate) the review store. Raises OSError / ValueError (secret, URL), SQLAlchemyError or
    alembic's CommandError (database)."""
    engine = db.make_engine(review_database_url(settings))
    audit = AuditLog(engine, review_secret(settings), settings.review.checkpoint_every)
    store = ReviewStore.open(engine, audit, two_person=settings.review.two_person)
    users = UserStore(engine, audit, session_ttl_s=settings.review.session_ttl_s)
    return Review(engine, audit, store, users)


def start_http(settings: Settings, ctx: ApiContext, timeout_s: float = 20.0) -> Background:
    """Serve the API in a thread; raise OSError when it does not come up. Forwarded headers are believed only
    from ``review.trusted_proxies`` (none by default): the sign-in throttle counts the client's address."""
    return http_thread.start_http(create_app(ctx), settings.review.http_host, settings.review.http_port,
                                  label="review API", thread_name="review-http", timeout_s=timeout_s,
                                  access_log=False,  # the audit log records who saw what; URLs carry case references
                                  trusted_proxies=settings.review.trusted_proxies)


def make_jobs(settings: Settings, review: Review, publisher: OutboxPublisher, retention: RetentionJob,
              metrics: ReviewMetrics) -> list[Periodic]:
    """The gauge, checkpoint, retention and publisher threads (not started; the publisher last; stop them in
    reverse order)."""
    jobs = [
        Periodic("queue gauges", stats_refresher(review.store.queue_stats, metrics), GAUGE_INTERVAL_S),
        Periodic("audit checkpoint", review.audit.checkpoint, settings.review.checkpoint_interval_s,
                 first_delay_s=settings.review.checkpoint_interval_s, final=review.audit.checkpoint),
        Periodic("retention", retention.run, settings.retention.interval_s,
                 first_delay_s=min(RETENTION_FIRST_DELAY_S, settings.retention.interval_s)),
        Periodic("decision publisher", publisher.tick, settings.review.publish_interval_s, final=publisher.tick),
    ]
    retention.next_run_in_s = jobs[2].seconds_to_next
    return jobs


def researcher(settings: Settings, store: ReviewStore) -> ReSearch | None:
    if not settings.review.re_search:
        return None

    def search_again(change: GalleryChange) -> list[Any]:
        return re_search(store, change, settings.match, utcnow())

    return search_again


def cluster_researcher(settings: Settings, store: ReviewStore) -> ClusterReSearch | None:
    """Confirmed clusters searched against each enrolment's new faces (with ``review.re_search``), else None."""
    if not settings.review.re_search:
        return None

    def search_clusters(change: GalleryChange) -> int:
        return re_search_clusters(store, change, settings.match)

    return search_clusters


def _exit_on_signal() -> None:
    """SIGTERM/SIGINT while opening the store: nothing was consumed, exit 0 at once (run_stage takes over)."""

    def _exit(signum: int, _frame: FrameType | None) -> None:
        logger.info("signal %s while starting: exiting", signum)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGINT, _exit)


def api_context(settings: Settings, review: Review, blobs: BlobStore, retention: RetentionJob,
                metrics: ReviewMetrics, on_final: Callable[[], None], photos: BlobStore | None = None) -> ApiContext:
    """The API's context: ``blobs`` the stills, ``photos`` the gallery photos (default: :func:`photo_store`)."""
    return ApiContext(review.store, review.users, review.audit, blobs,
                      review.store.decisions_since,
                      settings.review.session_ttl_s, retention.status, metrics, on_final, settings,
                      photos=photos if photos is not None else photo_store(settings))


def photo_store(settings: Settings) -> BlobStore:
    """The enrolled gallery photos (:func:`gallery_blob_dir`: ``<blob_dir>/gallery``), apart from the stills, so an
    erasure deletes only photos and a retention purge only stills."""
    return FileBlobStore(gallery_blob_dir(settings))


def main() -> int:
    settings = settings_or_exit("rfr-review")
    setup_logging(settings.log_level, json_lines=settings.log_json, service=SERVICE)
    _exit_on_signal()
    url = db.redacted(review_database_url(settings))
    try:
        review = open_review(settings)
        if review.store.record_policy(current_policy(settings), SYSTEM_ACTOR):
            logger.info("policy in force changed (audited as policy_change)")
    except (SQLAlchemyError, CommandError, OSError, ValueError) as exc:
        logger.error("review cannot start: review store %s: %s", url, exc)
        return EXIT_NO_STORE
    logger.info("review store %s (two-person verification %s)", url, "on" if settings.review.two_person else "OFF")
    metrics = ReviewMetrics.create()
    blobs: BlobStore = FileBlobStore(settings.blob_dir)
    photos = photo_store(settings)
    producer = kafka.make_producer(settings.kafka)
    publisher = OutboxPublisher(review.store, kafka.DeliveryTracker(producer), Topics.from_settings(settings.kafka))
    retention = RetentionJob(review.store, blobs, settings.retention, metrics)
    jobs = make_jobs(settings, review, publisher, retention, metrics)
    try:
        http = start_http(settings, api_context(settings, review, blobs, retention, metrics, jobs[-1].wake,
                                                photos))
    except OSError as exc:
        logger.error("review cannot start: %s", exc)
        review.engine.dispose()
        return EXIT_NO_HTTP
    for job in jobs:
        job.start()

    def make_handler(_settings: Settings, topics: Topics) -> BatchHandler:
        return ReviewHandler(review.store, topics, re_search=researcher(settings, review.store), blobs=photos,
                             ping=lambda: ping(review.engine), metrics=metrics,
                             re_search_clusters=cluster_researcher(settings, review.store))

    try:
        run_stage(settings, stage_spec(settings), make_handler)
    finally:
        http.close()
        _stop(jobs, review)
        producer.flush(10.0)
    return 0


def _stop(jobs: list[Periodic], review: Review) -> None:
    for job in reversed(jobs):
        job.stop()
    review.engine.dispose()
