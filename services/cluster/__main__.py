"""``python -m services.cluster``: repeat unknown offenders (MATCHES -> CLUSTERS), a faust-streaming worker.

Start-up: settings (RFR_ prefix), logging, the cluster rule (its hubness cohort file, if any, read and checked
against ``embed.model``: a bad one exits 2 before anything else starts), ``/metrics`` on ``metrics.cluster_port``,
the broker waited for and every topic created (the pipeline's and faust's leader topic: Tansu creates none by
itself), the cluster store migrated (``cluster.database_url``, SQLite under the stack's state dir by default), then
the faust worker runs until SIGTERM/SIGINT (faust's own handlers: the record in hand is finished or left
unacknowledged, then it stops).
"""

from __future__ import annotations

import logging
import sys
from datetime import timedelta

import faust

from rfr.cluster.clusterer import Clusterer, rule_of
from rfr.cluster.index import ClusterIndex
from rfr.cluster.store import ClusterStore
from rfr.core import kafka
from rfr.core.db import redacted
from rfr.core.logs import setup_logging
from rfr.core.metrics import StageMetrics, build_info, serve_metrics
from rfr.core.settings import EXIT_BAD_SETTINGS, Settings, cluster_database_url, settings_or_exit
from rfr.core.topics import Topics
from rfr.models import facenet_model_id
from services.cluster.app import GROUP, Runtime, faust_topics, make_app, wire
from services.cluster.handler import SERVICE, ClusterHandler
from services.cluster.metrics import ClusterMetrics

logger = logging.getLogger(__name__)

__all__ = ["GROUP", "main", "run"]


def run(settings: Settings) -> None:
    """Everything after logging: the cluster rule, metrics, broker and topics, store, index, then the worker
    (returns on exit)."""
    try:
        rule = rule_of(settings.cluster, facenet_model_id(settings.embed.model))
    except ValueError as exc:  # a bad cohort file: nothing has started yet
        logger.error("rfr-cluster: %s", exc)
        raise SystemExit(EXIT_BAD_SETTINGS) from exc
    build_info(SERVICE)
    serve_metrics(settings.metrics.host, settings.metrics.cluster_port)
    kafka.prepare_broker(settings.kafka, 120)
    kafka.ensure_topics(settings.kafka, faust_topics(settings.kafka))
    url = cluster_database_url(settings)
    store = ClusterStore.open(url)
    logger.info("cluster store at %s", redacted(url))
    index = ClusterIndex(settings.milvus, settings.cluster.collection_prefix)
    clusterer = Clusterer(store, index, rule,
                          retention=timedelta(days=settings.retention.no_candidate_days))
    metrics, stage = ClusterMetrics.create(), StageMetrics.create(SERVICE)
    handler = ClusterHandler(clusterer, Topics.from_settings(settings.kafka), metrics, stage,
                             include_low_quality=settings.cluster.include_low_quality,
                             max_message_bytes=settings.kafka.message_max_bytes)
    app = make_app(settings)
    wire(app, Runtime(settings, clusterer, handler, metrics, stage))
    worker = faust.Worker(app, loglevel=settings.log_level, override_logging=False, redirect_stdouts=False)
    try:
        worker.execute_from_commandline()
    finally:
        index.close()
        store.close()


def main() -> int:
    settings = settings_or_exit("rfr-cluster")
    setup_logging(settings.log_level, json_lines=settings.log_json, service=SERVICE)
    try:
        run(settings)
    except SystemExit as done:
        return int(done.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
