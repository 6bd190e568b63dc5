"""Metric values read as Prometheus would: through the registry's public API, never a metric's internals."""

from __future__ import annotations

from prometheus_client import CollectorRegistry


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """The value of sample ``name`` with ``labels`` (``_total``, ``_sum``, ``_count``... included in ``name``);
    0 when the labelled series was never touched."""
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value
