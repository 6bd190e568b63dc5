"""Prometheus metrics of the ingest service (``rfr_ingest_*``), beside the common ones in :mod:`rfr.core.metrics`."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

DECODE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass
class IngestMetrics:
    """Created once in ``main()`` and passed to the channels."""

    submissions: Counter  # {channel, outcome}: outcome is accepted | rejected | duplicate
    received_bytes: Counter  # {channel}
    decode_seconds: Histogram
    rejections: Counter  # {reason}
    status_updates: Counter  # {status}: downstream outcomes recorded for submitters

    @classmethod
    def create(cls, registry: CollectorRegistry = REGISTRY) -> IngestMetrics:
        return cls(
            submissions=Counter("rfr_ingest_submissions_total", "Stills submitted, by channel and outcome",
                                ["channel", "outcome"], registry=registry),
            received_bytes=Counter("rfr_ingest_received_bytes_total", "Encoded image bytes received",
                                   ["channel"], registry=registry),
            decode_seconds=Histogram("rfr_ingest_decode_seconds", "Seconds to validate and decode one still",
                                     buckets=DECODE_BUCKETS, registry=registry),
            rejections=Counter("rfr_ingest_rejections_total", "Stills rejected, by reason", ["reason"],
                               registry=registry),
            status_updates=Counter("rfr_ingest_status_updates_total", "Downstream outcomes recorded, by status",
                                   ["status"], registry=registry),
        )
