"""Prometheus metrics of the detect service (``rfr_detect_*``), beside the common ones in :mod:`rfr.core.metrics`."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

from rfr.core.metrics import LATENCY_BUCKETS

FACE_BUCKETS = (0, 1, 2, 3, 4, 6, 8, 16, 32)


@dataclass
class DetectMetrics:
    frames: Counter
    faces_found: Counter
    faces_rejected: Counter  # {reason}
    faces_dropped: Counter  # {reason}
    seconds: Histogram
    faces_per_frame: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry = REGISTRY) -> DetectMetrics:
        return cls(
            frames=Counter("rfr_detect_frames_total", "Frames searched for faces", registry=registry),
            faces_found=Counter("rfr_detect_faces_found_total", "Faces passed on for embedding", registry=registry),
            faces_rejected=Counter(
                "rfr_detect_faces_rejected_total", "Faces dropped by the quality gate", ["reason"], registry=registry
            ),
            faces_dropped=Counter(
                "rfr_detect_faces_dropped_total", "Usable faces not passed on by a resource guard (over_max_faces)",
                ["reason"], registry=registry,
            ),
            seconds=Histogram(
                "rfr_detect_seconds",
                "Detection, alignment and grading seconds per frame",
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            faces_per_frame=Histogram(
                "rfr_detect_faces_per_frame", "Accepted faces per frame", buckets=FACE_BUCKETS, registry=registry
            ),
        )
