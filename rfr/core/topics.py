"""The one registry of topic names, their partitioning and their configuration."""

from __future__ import annotations

from dataclasses import dataclass, field

from rfr.core.settings import KafkaSettings

SUBMISSIONS = "rfr.submissions.v1"
FRAMES = "rfr.frames.v1"
FACES = "rfr.faces.v1"
EMBEDDINGS = "rfr.embeddings.v1"
MATCHES = "rfr.matches.v1"
OUTCOMES = "rfr.outcomes.v1"
DEADLETTER = "rfr.deadletter.v1"
GALLERY = "rfr.gallery.v1"
DECISIONS = "rfr.decisions.v1"
INCIDENTS = "rfr.incidents.v1"
"""detect -> match: one IncidentStillReport per still of a multi-still incident (rfr.embedding.incidents)."""
CLUSTERS = "rfr.clusters.v1"
"""cluster -> review: one ClusterEvent when a cluster of one unknown face seen at several stores is first reportable,
then at each change of a reported one, retention's included (rfr.core.cluster_messages)."""
CLUSTER_PURGES = "rfr.cluster-purges.v1"
"""cluster -> case systems: one ClusterPurged when retention empties a reported cluster (rfr.core.cluster_messages)."""

ALL_TOPICS: tuple[str, ...] = (SUBMISSIONS, FRAMES, FACES, EMBEDDINGS, MATCHES, OUTCOMES, DEADLETTER, GALLERY,
                               DECISIONS, INCIDENTS, CLUSTERS, CLUSTER_PURGES)
LONG_KEPT: tuple[str, ...] = (DEADLETTER, DECISIONS)
"""Kept four times longer than the stream: dead letters wait for a person, decisions for case systems."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Topics:
    """Concrete topic names for one deployment (``namespace`` isolates test runs and tenants)."""

    namespace: str = ""

    def name(self, base: str) -> str:
        if base not in ALL_TOPICS:
            raise KeyError(f"unknown topic {base!r}")
        return f"{self.namespace}.{base}" if self.namespace else base

    @property
    def submissions(self) -> str:
        return self.name(SUBMISSIONS)

    @property
    def frames(self) -> str:
        return self.name(FRAMES)

    @property
    def faces(self) -> str:
        return self.name(FACES)

    @property
    def embeddings(self) -> str:
        return self.name(EMBEDDINGS)

    @property
    def matches(self) -> str:
        return self.name(MATCHES)

    @property
    def outcomes(self) -> str:
        return self.name(OUTCOMES)

    @property
    def deadletter(self) -> str:
        return self.name(DEADLETTER)

    @property
    def gallery(self) -> str:
        return self.name(GALLERY)

    @property
    def decisions(self) -> str:
        return self.name(DECISIONS)

    @property
    def incidents(self) -> str:
        return self.name(INCIDENTS)

    @property
    def clusters(self) -> str:
        return self.name(CLUSTERS)

    @property
    def cluster_purges(self) -> str:
        return self.name(CLUSTER_PURGES)

    @classmethod
    def from_settings(cls, kafka: KafkaSettings) -> Topics:
        return cls(namespace=kafka.topic_namespace)


def topic_specs(kafka: KafkaSettings) -> list[TopicSpec]:
    """Every topic the pipeline needs, with partitions and config, ready for :func:`rfr.core.kafka.ensure_topics`."""
    topics = Topics.from_settings(kafka)
    base_config = {
        "retention.ms": str(kafka.retention_ms),
        "max.message.bytes": str(kafka.message_max_bytes),
    }
    specs = []
    for base in ALL_TOPICS:
        config = dict(base_config)
        if base in LONG_KEPT:
            # The settings check that this stays within the shortest purge of retention.* (images in dead letters).
            config["retention.ms"] = str(kafka.retention_ms * 4)
        specs.append(TopicSpec(topics.name(base), kafka.partitions, kafka.replication_factor, config))
    return specs
