"""Prometheus figures of the cluster service (``rfr_cluster_*``), beside the common stage metrics. No per-person
labels: clusters and faces are counted, never named."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

CLUSTER_SIZE_BUCKETS = (1, 2, 3, 4, 5, 8, 10, 20, 50, 100, 200)


@dataclass
class ClusterMetrics:
    sightings: Counter
    clusters_open: Gauge
    sightings_held: Gauge
    sightings_per_cluster: Histogram
    merges: Counter
    reported: Counter
    skipped: Counter
    purged: Counter
    retention_events: Counter
    outbox_waiting: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry = REGISTRY) -> ClusterMetrics:
        return cls(
            sightings=Counter("rfr_cluster_sightings_total", "Unknown faces recorded (a redelivered one counts once)",
                              registry=registry),
            clusters_open=Gauge("rfr_cluster_clusters_open", "Clusters of unknown faces held (reportable or not)",
                                registry=registry),
            sightings_held=Gauge("rfr_cluster_sightings_held", "Unknown faces held (until retention purges them)",
                                 registry=registry),
            sightings_per_cluster=Histogram(
                "rfr_cluster_sightings_per_cluster", "Size of the cluster each recorded face ended in",
                buckets=CLUSTER_SIZE_BUCKETS, registry=registry),
            merges=Counter("rfr_cluster_merges_total", "Clusters absorbed into another by a bridging face",
                           registry=registry),
            reported=Counter("rfr_cluster_reported_total", "Cluster events the agent published (first report and "
                             "updates; retention's are rfr_cluster_retention_events_total)", registry=registry),
            skipped=Counter("rfr_cluster_lists_skipped_total", "Candidate lists not clustered, by why (candidates, "
                            "re_search, low_quality, expired: searched longer ago than retention keeps it)",
                            ["why"], registry=registry),
            purged=Counter("rfr_cluster_purged_total", "Unknown faces deleted by retention", registry=registry),
            retention_events=Counter(
                "rfr_cluster_retention_events_total", "Events published for reported clusters that retention shrank "
                "(ClusterEvent, cause retention) or emptied (ClusterPurged)", registry=registry),
            outbox_waiting=Gauge(
                "rfr_cluster_outbox_events", "Retention events waiting in the store's outbox for the broker (grows "
                "while it is unreachable)", registry=registry),
        )
