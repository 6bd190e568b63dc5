"""The domain step of the cluster service: one candidate list without candidates in, a cluster event (maybe) out.

:meth:`Clusterer.record` takes a ``no_candidate`` :class:`~rfr.core.schemas.CandidateList` (the caller filters with
:func:`wanted`) and

1. returns at once, with the event of the cluster the face is in now, when the face was recorded already (a
   redelivery changes nothing; the event repeats its ``event_id`` unless the cluster changed since);
2. looks up the face's nearest earlier unknown faces of the same model in the index (Milvus), then upserts the
   face there (idempotent: keyed by face id);
3. in ONE SQL transaction: reads the clusters those neighbours are in now (locked), applies the rule
   (:func:`rfr.cluster.rule.assign`), records the sighting, grows or founds its cluster, absorbs the clusters the
   rule merges (their sightings move, their rows go), bumps the revision;
4. returns the :class:`~rfr.core.cluster_messages.ClusterEvent` of the cluster once the rule has called it
   reportable (``min_sightings`` from ``min_stores`` stores): on first reaching it and on every later change, also
   when retention has since left it below the rule (its readers know it: they must see it change).

The SQL store is the truth. A crash between 2 and 3 leaves an index row no sighting names: lookups ignore it, and
the redelivered list records the face and reuses the row. :meth:`Clusterer.purge` applies the retention policy of
probes with no candidate (index rows first, then the sightings; clusters shrink or go, and readers of reported ones
are told through the outbox: :mod:`rfr.cluster.retention`), :meth:`Clusterer.
repair_index` re-adds sightings a lost index lacks. No Kafka here: services/cluster/ is the adapter.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import Connection

from rfr.cluster.retention import PurgeReport, purge_rows
from rfr.cluster.rule import Centroid, ClusterRule, Hubness, Vector, assign, unit
from rfr.cluster.store import Cluster, ClusterStore, Sighting
from rfr.core.cluster_messages import ClusterEvent, ClusterRuleInfo, ClusterSighting
from rfr.core.schemas import CandidateList, template_bytes, utcnow
from rfr.core.settings import ClusterSettings
from rfr.gallery.scoring import Cohort

logger = logging.getLogger(__name__)


class NeighbourIndex(Protocol):
    """What the clusterer needs of the unknown-face index (:class:`rfr.cluster.index.ClusterIndex`)."""

    def upsert(self, model_id: str, rows: Sequence[tuple[str, Vector, datetime]]) -> None: ...

    def search(self, model_id: str, vector: Vector, limit: int) -> list[tuple[str, float]]: ...

    def present(self, model_id: str, face_ids: Sequence[str]) -> set[str]: ...

    def delete(self, model_id: str, face_ids: Sequence[str]) -> None: ...

    def delete_before(self, model_id: str, before: datetime) -> None: ...


class CohortMismatchError(Exception):
    """A face of another embedding model than the hubness cohort's: its similarities would be on another scale."""


def rule_of(settings: ClusterSettings, model_id: str | None = None) -> ClusterRule:
    """The rule the settings give (thresholds, report size and spread, neighbours looked up, and the hubness
    correction when ``hubness_k`` > 0: its cohort file is read here, once). Raises ValueError for a cohort file that
    cannot be read, is not a cohort, has fewer than ``hubness_k`` faces, or (with ``model_id``) was embedded by
    another model."""
    hubness = None
    if settings.hubness_k > 0 and settings.cohort_file is not None:
        path = settings.cohort_file
        try:
            cohort, digest = Cohort.load_hashed(path, model_id)  # the bytes hashed are the bytes loaded
        except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
            raise ValueError(f"cluster.cohort_file {path}: not a readable cohort file ({exc})") from exc
        except ValueError as exc:
            raise ValueError(f"cluster.cohort_file {path}: {exc}") from exc
        hubness = Hubness(cohort.vectors, settings.hubness_k, cohort.model_id, digest)
        logger.info("hubness-corrected cluster rule: k=%d over a cohort of %d faces of %s (%s)", settings.hubness_k,
                    len(cohort.vectors), cohort.model_id, path)
    return ClusterRule(link_threshold=settings.link_threshold, merge_threshold=settings.merge_threshold,
                       min_sightings=settings.min_sightings, min_stores=settings.min_stores,
                       neighbours=settings.neighbours, linkage=settings.linkage, hubness=hubness)


def wanted(cl: CandidateList, include_low_quality: bool = False) -> bool:
    """Whether a candidate list is an unknown face to cluster: outcome ``no_candidate`` of the still's own search
    (trigger ``submission``, not a re-search), and not an investigative search of a gated probe unless
    ``include_low_quality``."""
    return (cl.outcome == "no_candidate" and cl.trigger == "submission"
            and (include_low_quality or not cl.low_quality))


def new_cluster_id(face_id: str) -> str:
    """``cl_<24 hex>`` of the founding face: a replay founds the same cluster under the same id."""
    return "cl_" + hashlib.sha256(face_id.encode()).hexdigest()[:24]


def sighting_of(cl: CandidateList) -> Sighting:
    """The sighting a candidate list records (its probe's template made unit length; ValueError for a zero one)."""
    meta = cl.meta
    return Sighting(face_id=cl.face_id, submission_id=cl.submission_id, retailer_id=meta.retailer_id,
                    store_id=meta.store_id, camera_id=meta.camera_id, captured_at=meta.captured_at,
                    searched_at=cl.searched_at, still_ref=cl.probe.still_ref, box=cl.probe.box, model_id=cl.model_id,
                    template=template_bytes(unit(cl.probe.vector)))


@dataclass(frozen=True)
class Step:
    """What one list did: ``event`` to publish (None: the cluster was never reported), ``recorded`` (False: the face
    was recorded already, or skipped), the ``cluster_id`` it is in, that cluster's ``size``, and clusters ``merged``
    into it. ``skipped``: why the list was not recorded at all (``expired``: its probe is past retention; then
    ``cluster_id`` is empty and ``size`` 0), None when it was handled."""

    event: ClusterEvent | None
    recorded: bool
    cluster_id: str
    size: int
    merged: int = 0
    skipped: str | None = None


class Clusterer:
    """Repeat unknown offenders over a :class:`ClusterStore` and a :class:`NeighbourIndex`; see the module doc.
    Not thread-safe by itself: one worker thread calls it (several workers may share a PostgreSQL store).
    ``retention``: how long a probe with no candidate is kept (``RetentionSettings.no_candidate_days``); a list
    searched longer ago than that is not recorded (a replay must not bring back faces retention purged); None
    records every list."""

    def __init__(self, store: ClusterStore, index: NeighbourIndex, rule: ClusterRule,
                 clock: Callable[[], datetime] = utcnow, retention: timedelta | None = None) -> None:
        self.store = store
        self.index = index
        self.rule = rule
        self.clock = clock
        self.retention = retention

    def record(self, cl: CandidateList) -> Step:
        """Record one unknown face (see the module doc). Raises ValueError for an unusable template,
        :class:`CohortMismatchError` for a face of another model than the hubness cohort's, and whatever the index
        (:class:`rfr.cluster.index.IndexUnavailableError`) or the database raises; nothing is then recorded.
        A list whose probe is already past ``retention`` is skipped (``Step.skipped == "expired"``)."""
        if self.retention is not None and cl.searched_at < self.clock() - self.retention:
            logger.info("list of face %s searched at %s is past retention: not recorded", cl.face_id,
                        cl.searched_at.isoformat())
            return Step(None, False, "", 0, skipped="expired")
        sighting = sighting_of(cl)
        with self.store.reading() as conn:
            known = self.store.sighting(conn, sighting.face_id)
            if known is not None:
                return self._again(conn, known)
        self._check_cohort(sighting)
        hits = self.index.search(sighting.model_id, sighting.vector, self.rule.neighbours + 1)
        near = [f for f, _ in hits if f != sighting.face_id][: self.rule.neighbours]
        self.index.upsert(sighting.model_id, [(sighting.face_id, sighting.vector, sighting.searched_at)])
        with self.store.transaction() as conn:
            known = self.store.sighting(conn, sighting.face_id)
            if known is not None:  # another worker recorded it meanwhile
                return self._again(conn, known)
            return self._join(conn, sighting, near)

    def _check_cohort(self, sighting: Sighting) -> None:
        hub = self.rule.hubness
        if hub is None:
            return
        if sighting.model_id != hub.model_id or len(sighting.vector) != hub.cohort.shape[1]:
            raise CohortMismatchError(
                f"face {sighting.face_id} was embedded by {sighting.model_id!r} ({len(sighting.vector)} dimensions), "
                f"the cluster cohort by {hub.model_id!r} ({hub.cohort.shape[1]}): rebuild cluster.cohort_file with "
                "that model (rfr cohort)")

    def _again(self, conn: Connection, known: Sighting) -> Step:
        cluster = self.store.clusters(conn, [known.cluster_id])[known.cluster_id]
        event = self._event(conn, cluster) if cluster.reported else None
        return Step(event, False, cluster.cluster_id, cluster.centroid.count)

    def _join(self, conn: Connection, sighting: Sighting, near: list[str]) -> Step:
        candidates = self.store.clusters(conn, set(self.store.clusters_of(conn, near, sighting.model_id).values()))
        decision = assign(sighting.vector, {c: k.centroid for c, k in candidates.items()}, self.rule)
        now = self.clock()
        if decision.cluster_id is None:
            cluster = Cluster(new_cluster_id(sighting.face_id), sighting.model_id, Centroid(sighting.vector, 1), 1,
                              False, (), now, now)
            self.store.save_cluster(conn, cluster, new=True)
        else:
            base = candidates[decision.cluster_id]
            absorbed = [candidates[c] for c in decision.merge]
            total = base.centroid.total + sighting.vector
            for a in absorbed:
                total = total + a.centroid.total
            count = base.centroid.count + 1 + sum(a.centroid.count for a in absorbed)
            cluster = replace(base, centroid=Centroid(total, count), revision=base.revision + 1,
                              reported=base.reported or any(a.reported for a in absorbed),
                              merged_from=tuple(decision.merge), updated_at=now, cause="sightings")
        self.store.add_sighting(conn, replace(sighting, cluster_id=cluster.cluster_id))
        for other in decision.merge:
            self.store.move_members(conn, other, cluster.cluster_id)
            self.store.delete_cluster(conn, other)
        reportable = self.rule.reportable(cluster.centroid.count, self.store.store_count(conn, cluster.cluster_id))
        if reportable and not cluster.reported:
            cluster = replace(cluster, reported=True)
        if decision.cluster_id is not None or cluster.reported:
            self.store.save_cluster(conn, cluster, new=False)
        event = self._event(conn, cluster) if cluster.reported else None
        if decision.merge:
            logger.info("cluster %s absorbed %s", cluster.cluster_id, ", ".join(decision.merge))
        return Step(event, True, cluster.cluster_id, cluster.centroid.count, len(decision.merge))

    def _event(self, conn: Connection, cluster: Cluster) -> ClusterEvent:
        """The whole cluster as an event (deterministic for one revision: a redelivery repeats it exactly)."""
        fused = cluster.centroid.template
        sightings = [ClusterSighting(face_id=m.face_id, submission_id=m.submission_id, retailer_id=m.retailer_id,
                                     store_id=m.store_id, camera_id=m.camera_id, captured_at=m.captured_at,
                                     still_ref=m.still_ref, box=m.box, similarity=float(m.vector @ fused))
                     for m in self.store.members(conn, cluster.cluster_id)]
        rule = ClusterRuleInfo(link_threshold=self.rule.link_threshold, merge_threshold=self.rule.merge_threshold,
                               min_sightings=self.rule.min_sightings, min_stores=self.rule.min_stores,
                               linkage=self.rule.linkage,
                               hubness_k=self.rule.hubness.k if self.rule.hubness is not None else 0,
                               cohort_sha256=self.rule.hubness.sha256 if self.rule.hubness is not None else "")
        return ClusterEvent(event_id=f"{cluster.cluster_id}:{cluster.revision}", cluster_id=cluster.cluster_id,
                            revision=cluster.revision, model_id=cluster.model_id, at=cluster.updated_at,
                            sightings=sightings, template=template_bytes(fused), merged_from=list(cluster.merged_from),
                            rule=rule, cause=cluster.cause)

    def purge(self, before: datetime, batch: int = 500) -> PurgeReport:
        """Delete every sighting searched before ``before`` (retention: ``RetentionSettings.no_candidate_days`` of
        probes with no candidate): from the index first, then, in one transaction per batch, from the store, where
        each cluster that lost members is rebuilt from those left (revision + 1) or deleted when none is left. The
        clusters rebuilt are those the faces are in when the transaction deletes them (a merge committed since the
        batch was read moved them), locked first.
        Index rows older than ``before`` that no sighting names go too. Idempotent; an index failure leaves the
        store as it was (the next pass retries)."""
        report = PurgeReport()
        with self.store.reading() as conn:
            models = set(self.store.model_ids(conn))
        while True:
            with self.store.reading() as conn:
                due = self.store.expired(conn, before, batch)
            if not due:
                break
            for model in sorted({s.model_id for s in due}):
                self.index.delete(model, [s.face_id for s in due if s.model_id == model])
            done = purge_rows(self.store, [s.face_id for s in due], self.clock(), self._event)
            report = report + done
            if not done.sightings:  # every face of the batch still moving: the next pass retries
                break
        for model in sorted(models):
            self.index.delete_before(model, before)
        if report.sightings:
            logger.info("retention: %d unknown face(s) purged; %d cluster(s) deleted, %d shrunk; %d event(s) for "
                        "readers of reported ones", report.sightings, report.clusters_deleted,
                        report.clusters_shrunk, report.events)
        return report

    def repair_index(self, batch: int = 1000) -> int:
        """Re-add to the index every sighting it lacks (after an index was lost or restored from an older copy);
        returns how many were added."""
        after, added = "", 0
        while True:
            with self.store.reading() as conn:
                page = self.store.page(conn, after, batch)
            if not page:
                return added
            after = page[-1].face_id
            for model in sorted({s.model_id for s in page}):
                group = [s for s in page if s.model_id == model]
                have = self.index.present(model, [s.face_id for s in group])
                missing = [(s.face_id, s.vector, s.searched_at) for s in group if s.face_id not in have]
                self.index.upsert(model, missing)
                added += len(missing)

