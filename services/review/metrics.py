"""Prometheus figures of the review service (``rfr_review_*``), beside the common stage metrics. No per-person labels:
never a reviewer's name, a subject or a case id, only states, stages, outcomes and kinds. No figure shows the outcome
of a decision that is not final (a first decision awaiting its blind verification): final decisions are counted by
outcome, steps by stage only."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from rfr.core.schemas import utcnow
from rfr.review.views import QueueStats

logger = logging.getLogger(__name__)


@dataclass
class ReviewMetrics:
    """Created once in ``main()`` (or per test on a registry of its own) and passed to the parts that count."""

    queue_cases: Gauge  # {state}
    oldest_pending_age: Gauge
    decisions: Counter  # {outcome}: final decisions only (lead | no_lead), never a first decision's outcome
    steps: Counter  # {stage}: first | verification | supervisor | escalation (no outcome: the blind rule)
    disagreements: Counter
    purged: Counter  # {kind}: still | crop | template
    cases_created: Counter  # {trigger}: submission | re_search
    searches_recorded: Counter  # {outcome}: candidates | no_candidate
    outbox_pending: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry = REGISTRY) -> ReviewMetrics:
        return cls(
            queue_cases=Gauge("rfr_review_queue_cases", "Review cases by state", ["state"], registry=registry),
            oldest_pending_age=Gauge("rfr_review_oldest_pending_age_seconds",
                                     "Age of the oldest case waiting for people (pending, awaiting verification "
                                     "or escalated), seconds; 0 when none waits", registry=registry),
            decisions=Counter("rfr_review_decisions_total", "Final decisions of cases, by outcome (counted when the "
                              "case becomes final, so no outcome shows before it is verified)", ["outcome"],
                              registry=registry),
            steps=Counter("rfr_review_steps_total", "People's steps on cases, by stage (first, verification, "
                          "supervisor, escalation), without their outcome", ["stage"], registry=registry),
            disagreements=Counter("rfr_review_disagreements_total",
                                  "Verifications that disagreed with the first decision (escalated to a supervisor)",
                                  registry=registry),
            purged=Counter("rfr_review_purged_total", "Probe items deleted by retention, by kind",
                           ["kind"], registry=registry),
            cases_created=Counter("rfr_review_cases_created_total", "Review cases created, by trigger "
                                  "(submission, re_search)", ["trigger"], registry=registry),
            searches_recorded=Counter("rfr_review_searches_recorded_total",
                                      "Candidate lists recorded in the audit log, by outcome", ["outcome"],
                                      registry=registry),
            outbox_pending=Gauge("rfr_review_outbox_pending", "Final decisions not yet published on "
                                 "rfr.decisions.v1", registry=registry),
        )

    def show_stats(self, stats: QueueStats, now: datetime) -> None:
        """Set the gauges from :meth:`rfr.review.store.ReviewStore.queue_stats` read at ``now``."""
        for state, n in stats.counts.items():
            self.queue_cases.labels(state).set(n)
        oldest = stats.oldest_open_created_at
        self.oldest_pending_age.set(0.0 if oldest is None else max(0.0, (now - oldest).total_seconds()))
        self.outbox_pending.set(stats.outbox_pending)


def stats_refresher(stats: Callable[[], QueueStats], metrics: ReviewMetrics,
                    clock: Callable[[], datetime] = utcnow) -> Callable[[], None]:
    """A function that reads the queue statistics and sets the gauges (run periodically by the service)."""

    def refresh() -> None:
        metrics.show_stats(stats(), clock())

    return refresh
