"""Prometheus metrics of the embed stage (``rfr_embed_*``), beside the common ones in :mod:`rfr.core.metrics`."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, Info

from rfr.core.metrics import BATCH_BUCKETS, LATENCY_BUCKETS

INFERENCE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class EmbedMetrics:
    """Created once in ``main()`` and passed to the handler."""

    faces: Counter
    batch_faces: Histogram
    inference_seconds: Histogram
    decode_seconds: Histogram
    queue_wait_seconds: Histogram
    model: Info

    @classmethod
    def create(cls, registry: CollectorRegistry = REGISTRY) -> EmbedMetrics:
        return cls(
            faces=Counter("rfr_embed_faces_total", "Faces embedded", registry=registry),
            batch_faces=Histogram("rfr_embed_batch_faces", "Faces per forward pass", buckets=BATCH_BUCKETS,
                                  registry=registry),
            inference_seconds=Histogram("rfr_embed_inference_seconds", "Seconds per forward pass (with "
                                        "preprocessing)", buckets=INFERENCE_BUCKETS, registry=registry),
            decode_seconds=Histogram("rfr_embed_decode_seconds", "Seconds to parse and decode one batch of "
                                     "FaceEvents", buckets=INFERENCE_BUCKETS, registry=registry),
            queue_wait_seconds=Histogram("rfr_embed_queue_wait_seconds", "Seconds a FaceEvent waited on the "
                                         "topic before embedding", buckets=LATENCY_BUCKETS, registry=registry),
            model=Info("rfr_embed_model", "The embedding model in use", registry=registry),
        )

    def set_model(self, model_id: str, weights_sha256: str, device: str, precision: str) -> None:
        self.model.info({"model_id": model_id, "weights_sha256": weights_sha256, "device": device,
                         "precision": precision})
