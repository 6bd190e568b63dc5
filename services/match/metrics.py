"""Prometheus figures of the match service (``rfr_match_*``), beside the common stage metrics. No per-person labels."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from rfr.core.metrics import LATENCY_BUCKETS
from rfr.gallery.base import Gallery, GalleryError

logger = logging.getLogger(__name__)

SEARCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CANDIDATE_BUCKETS = (0, 1, 2, 3, 5, 10, 20, 50, 100)


@dataclass
class MatchMetrics:
    searches: Counter
    search_seconds: Histogram
    candidates: Histogram
    gallery_faces: Gauge
    end_to_end_seconds: Histogram
    incidents_pending: Gauge
    incidents_overdue: Gauge
    incidents_purged: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry = REGISTRY) -> MatchMetrics:
        return cls(
            searches=Counter("rfr_match_searches_total", "Probe faces searched, by outcome (candidates/no_candidate)",
                             ["outcome"], registry=registry),
            search_seconds=Histogram("rfr_match_search_seconds", "Seconds of one gallery search call (one batch)",
                                     buckets=SEARCH_BUCKETS, registry=registry),
            candidates=Histogram("rfr_match_candidates_per_probe", "Candidate subjects above threshold per probe face",
                                 buckets=CANDIDATE_BUCKETS, registry=registry),
            gallery_faces=Gauge("rfr_match_gallery_faces", "Enrolled gallery photos searched (all watch-lists "
                                "of this model)", registry=registry),
            end_to_end_seconds=Histogram("rfr_match_end_to_end_seconds",
                                         "Seconds from the still's receipt (FrameEvent.received_at) to its candidate "
                                         "list", buckets=LATENCY_BUCKETS, registry=registry),
            incidents_pending=Gauge("rfr_match_incidents_pending", "Multi-still incidents waiting for their other "
                                    "stills or their timeout", registry=registry),
            incidents_overdue=Gauge("rfr_match_incidents_overdue", "Multi-still incidents complete or past their "
                                    "timeout (RFR_MATCH__INCIDENT_TIMEOUT_S) whose candidate list is not published "
                                    "yet (not searched, or waiting in the outbox)",
                                    registry=registry),
            incidents_purged=Counter("rfr_match_incidents_purged_total", "Closed multi-still incidents purged from "
                                     "the pending-incident store (the ids of their stills and faces) "
                                     "RFR_MATCH__CLOSED_INCIDENT_RETENTION_S after their search", registry=registry),
        )


class GallerySizeUpdater:
    """Refreshes ``rfr_match_gallery_faces`` every ``interval_s`` in a daemon thread (gallery errors are logged)."""

    def __init__(self, gallery: Gallery, gauge: Gauge, interval_s: float = 30.0) -> None:
        self.gallery = gallery
        self.gauge = gauge
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gallery-size", daemon=True)

    def start(self) -> GallerySizeUpdater:
        self._thread.start()
        return self

    def update(self) -> None:
        try:
            self.gauge.set(self.gallery.count())
        except GalleryError as exc:
            logger.warning("gallery size not updated: %s", exc)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.update()
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
