"""The review service's scheduled work: retention passes, and what the API reports about them."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from rfr.core.blobstore import BlobStore
from rfr.core.schemas import utcnow
from rfr.core.settings import RetentionSettings
from rfr.review.retention import RETENTION_ACTOR, RetentionReport, due_counts, run_retention
from rfr.review.store import ReviewStore
from services.review.api_models import RetentionOut
from services.review.metrics import ReviewMetrics

logger = logging.getLogger(__name__)


def report_summary(report: RetentionReport) -> dict[str, Any]:
    """A pass's report without the face ids: when, items purged by kind, probes purged, cases expired."""
    return {"at": report.at.isoformat(), "purged": dict(report.purged), "probes": len(report.probes),
            "expired_cases": len(report.expired_cases)}


class RetentionJob:
    """One retention pass per :meth:`run` (scheduled by the service every ``retention.interval_s``), counted in
    ``rfr_review_purged_total{kind}``; :meth:`status` answers ``GET /v1/retention``."""

    def __init__(self, store: ReviewStore, blobs: BlobStore, policy: RetentionSettings,
                 metrics: ReviewMetrics | None = None, clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.blobs = blobs
        self.policy = policy
        self.metrics = metrics
        self.clock = clock
        self.last_report: RetentionReport | None = None
        self.next_run_in_s: Callable[[], float | None] = lambda: None
        self._lock = threading.Lock()  # one pass at a time

    def run(self) -> RetentionReport:
        with self._lock:
            report = run_retention(self.store, self.blobs, self.policy, self.clock(), actor=RETENTION_ACTOR)
        self.last_report = report
        if self.metrics is not None:
            for kind, n in report.purged.items():
                if n:
                    self.metrics.purged.labels(kind).inc(n)
        return report

    def status(self) -> RetentionOut:
        due: dict[str, Any] | None = None
        try:
            due = dict(due_counts(self.store, self.policy, self.clock()))
        except SQLAlchemyError as exc:
            logger.warning("retention status: what is due could not be counted: %s", exc)
        last = self.last_report
        return RetentionOut(policy=self.policy.model_dump(mode="json"), last_run_at=None if last is None else last.at,
                            next_run_in_s=self.next_run_in_s(),
                            last_report=None if last is None else report_summary(last), due=due)
