"""``python -m services.match``: the match stage (EMBEDDINGS + INCIDENTS -> MATCHES + OUTCOMES).

Multi-still incidents wait in the pending-incident store (``match.incident_database_url``, SQLite under the
stack's state dir by default) and are searched by the incident worker thread (services/match/incident_worker.py).

The gallery collection of the configured embedding model is checked at start-up: a collection made for another
model stops the service with exit code 2. An unreachable Milvus does not stop it: each batch is retried with
backoff until the gallery answers.
"""

from __future__ import annotations

import logging
import sys

from rfr.core import kafka
from rfr.core.logs import setup_logging
from rfr.core.settings import Settings, incident_database_url, settings_or_exit
from rfr.core.stage import StageSpec, run_stage
from rfr.core.stream import BatchHandler
from rfr.core.topics import EMBEDDINGS, INCIDENTS, Topics
from rfr.gallery.base import GalleryMismatchError, GalleryUnavailableError
from rfr.gallery.milvus import open_gallery
from services.match.handler import MatchHandler
from services.match.incident_worker import IncidentWorker
from services.match.incidents import IncidentStore
from services.match.metrics import GallerySizeUpdater, MatchMetrics

logger = logging.getLogger(__name__)

SERVICE = "match"
GROUP = "rfr-match"
EXIT_GALLERY_MISMATCH = 2


def stage_spec(settings: Settings) -> StageSpec:
    return StageSpec(service=SERVICE, group=GROUP, inputs=[EMBEDDINGS, INCIDENTS],
                     metrics_port=settings.metrics.match_port, batch_size=settings.match.batch_size,
                     batch_timeout_ms=settings.match.batch_timeout_ms)


def main() -> int:
    settings = settings_or_exit("rfr-match")
    setup_logging(settings.log_level, json_lines=settings.log_json, service=SERVICE)
    gallery = open_gallery(settings)
    try:
        dim = gallery.dim()
        logger.info("gallery %s at %s: %s", gallery.collection, settings.milvus.uri,
                    f"dimension {dim}" if dim else "nothing enrolled yet")
    except GalleryMismatchError as exc:
        logger.error("match cannot start: %s", exc)
        return EXIT_GALLERY_MISMATCH
    except GalleryUnavailableError as exc:
        logger.warning("gallery not reachable yet (%s); batches will be retried until it is", exc)

    incidents = IncidentStore.open(incident_database_url(settings))

    def make_handler(_settings: Settings, topics: Topics) -> BatchHandler:
        metrics = MatchMetrics.create()
        GallerySizeUpdater(gallery, metrics.gallery_faces, settings.match.gallery_size_interval_s).start()
        handler = MatchHandler(gallery, settings.match, topics, metrics, incidents=incidents)
        worker = IncidentWorker(incidents, handler.build_incident,
                                kafka.DeliveryTracker(kafka.make_producer(settings.kafka)), topics,
                                settings.match.incident_timeout_s, settings.match.incident_poll_s,
                                on_pending=metrics.incidents_pending.set, on_overdue=metrics.incidents_overdue.set,
                                retention_s=settings.match.closed_incident_retention_s,
                                on_purged=metrics.incidents_purged.inc)
        handler.wake = worker.wake
        worker.start()
        return handler

    run_stage(settings, stage_spec(settings), make_handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
