"""One transaction of a retention pass over the cluster store (:meth:`rfr.cluster.clusterer.Clusterer.purge`).

:func:`purge_rows` deletes due sightings and rebuilds the clusters they were in: a cluster that keeps sightings gets
its centroid summed again from those left (revision + 1); one left without sightings is deleted. Readers of a
cluster that was reported are told, through the outbox (:mod:`rfr.cluster.outbox`) in the same transaction:

* a reported cluster that shrank: a :class:`~rfr.core.cluster_messages.ClusterEvent` of its new revision (the
  whole cluster as it is now, even below the rule's size or spread), on ``rfr.clusters.v1``, with
  ``cause="retention"`` (kept with the cluster, so a redelivered list repeats that event exactly);
* a reported cluster that retention emptied: a :class:`~rfr.core.cluster_messages.ClusterPurged` on
  ``rfr.cluster-purges.v1``.

A cluster never reported was never published, so nothing is said of it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import Connection

from rfr.cluster import outbox
from rfr.cluster.store import Cluster, ClusterStore, centroid_of
from rfr.core.cluster_messages import ClusterEvent, ClusterPurged
from rfr.core.topics import CLUSTER_PURGES, CLUSTERS

EventOf = Callable[[Connection, Cluster], ClusterEvent]
"""Builds a cluster's event as the transaction sees it now (the clusterer's, with its rule)."""


@dataclass(frozen=True)
class PurgeReport:
    """One retention pass: sightings deleted, clusters deleted (emptied) and clusters shrunk, and the events put into
    the outbox for readers of reported clusters."""

    sightings: int = 0
    clusters_deleted: int = 0
    clusters_shrunk: int = 0
    events: int = 0

    def __add__(self, other: PurgeReport) -> PurgeReport:
        return PurgeReport(self.sightings + other.sightings, self.clusters_deleted + other.clusters_deleted,
                           self.clusters_shrunk + other.clusters_shrunk, self.events + other.events)


def purge_rows(store: ClusterStore, face_ids: list[str], now: datetime, event_of: EventOf) -> PurgeReport:
    """Delete ``face_ids`` in one transaction, rebuilding the clusters they are in NOW, and put the events of the
    reported ones into the outbox (module doc). Those clusters are locked (PostgreSQL: ``FOR UPDATE``, id order;
    SQLite: the transaction is the only writer), then the faces' owners are read again, as a merge may have
    committed meanwhile; only faces whose cluster is locked are deleted (a face still moving stays for the next
    batch). Raises what the database raises; nothing is then deleted."""
    deleted = shrunk = events = 0
    with store.transaction() as conn:
        owner_of = store.owners(conn, face_ids)
        locked: dict[str, Cluster] = {}
        for _ in range(4):
            if set(owner_of.values()) <= locked.keys():
                break
            locked = store.clusters(conn, set(owner_of.values()) | locked.keys())
            owner_of = store.owners(conn, face_ids)
        gone = sorted(f for f, c in owner_of.items() if c in locked)
        lost = Counter(owner_of[f] for f in gone)
        store.delete_sightings(conn, gone)
        for cluster in (locked[c] for c in sorted(lost)):
            left = store.members(conn, cluster.cluster_id)
            if not left:
                store.delete_cluster(conn, cluster.cluster_id)
                deleted += 1
                if cluster.reported:
                    outbox.put(conn, CLUSTER_PURGES, _purged(cluster, now, lost[cluster.cluster_id]))
                    events += 1
                continue
            rebuilt = replace(cluster, centroid=centroid_of(left), revision=cluster.revision + 1, merged_from=(),
                              updated_at=now, cause="retention")
            store.save_cluster(conn, rebuilt, new=False)
            shrunk += 1
            if rebuilt.reported:
                outbox.put(conn, CLUSTERS, event_of(conn, rebuilt))
                events += 1
    return PurgeReport(len(gone), deleted, shrunk, events)


def _purged(cluster: Cluster, now: datetime, faces: int) -> ClusterPurged:
    revision = cluster.revision + 1
    return ClusterPurged(event_id=f"{cluster.cluster_id}:{revision}", cluster_id=cluster.cluster_id,
                         revision=revision, model_id=cluster.model_id, at=now, sightings_purged=faces)
