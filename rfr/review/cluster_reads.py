"""Reading clusters of unknown faces (the list, one cluster audited, a sighting's crop, the confirmed clusters to
search) and keeping the searches of their fused templates: the read side of :class:`rfr.review.clusters.Clusters`,
a mixin of :class:`rfr.review.store.ReviewStore`, and the refusals of both."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, insert, select

from rfr.review import tables as t
from rfr.review import workflow as wf
from rfr.review.cluster_views import ClusterStatus, ClusterSummary, ClusterView, list_clusters, read_cluster
from rfr.review.cluster_views import count_clusters as _count
from rfr.review.outbox import AuditSink
from rfr.review.views import canonical


class ClusterNotFound(wf.CaseNotFound):
    """No cluster has this id (HTTP 404, ``cluster_not_found``)."""

    def __init__(self, cluster_id: str) -> None:
        wf.ReviewError.__init__(self, "cluster_not_found", f"no cluster {cluster_id}")
        self.case_id = 0
        self.cluster_id = cluster_id


class ClusterWrongState(wf.WrongState):
    """The cluster's status does not allow this step (HTTP 409, ``wrong_state``)."""

    def __init__(self, cluster_id: str, status: str, step: str) -> None:
        wf.ReviewError.__init__(self, "wrong_state", f"cluster {cluster_id} is {status}: it cannot take {step}")
        self.case_id = 0
        self.state = status


class SearchableCluster(NamedTuple):
    """A confirmed cluster's fused template (float32 LE bytes) at its ``revision``."""

    cluster_id: str
    revision: int
    template: bytes
    model_id: str


def lock_cluster(conn: Connection, cluster_id: str) -> Any:
    """The cluster's row, locked for this transaction (None: unknown)."""
    return conn.execute(select(t.clusters).where(t.clusters.c.cluster_id == cluster_id).with_for_update()).first()


class ClusterReads:
    """Reads of clusters and their searches (a mixin of :class:`rfr.review.store.ReviewStore`)."""

    engine: Engine
    audit: AuditSink
    clock: Callable[[], datetime]

    # -- reads --------------------------------------------------------------------------------------------------

    def clusters(self, status: str | None = None, limit: int = 50, offset: int = 0) -> list[ClusterSummary]:
        """Clusters pending first, then newest revision first (:func:`rfr.review.cluster_views.list_clusters`)."""
        with self.engine.connect() as conn:
            return list_clusters(conn, status, max(1, min(limit, 500)), max(0, offset))

    def cluster_counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return _count(conn)

    def cluster(self, cluster_id: str, viewer: wf.Actor, reason: str = "cluster page") -> ClusterView:
        """The cluster as reviewers see it; the view is audited (``cluster_view``). Raises ClusterNotFound,
        NotPermitted (reviewers, supervisors and auditors only)."""
        wf.require_role(viewer, wf.VIEWING_ROLES, "view a cluster")
        with self.engine.begin() as conn:
            row = lock_cluster(conn, cluster_id)
            if row is None:
                raise ClusterNotFound(cluster_id)
            view = read_cluster(conn, row)
            self.audit.append(conn, viewer.name, str(viewer.role), "cluster_view", reason=reason.strip() or "-",
                              details={"cluster_id": cluster_id, "revision": row.revision,
                                       "faces": [s.face_id for s in view.sightings if s.probe == "kept"]})
            return view

    def cluster_crop(self, cluster_id: str, face_id: str, viewer: wf.Actor, reason: str = "cluster page") -> bytes:
        """A sighting's face crop (JPEG), its read audited (``cluster_view``, part ``crop``). Raises
        ClusterNotFound (no such cluster or sighting, or its crop is not kept), NotPermitted."""
        wf.require_role(viewer, wf.VIEWING_ROLES, "view a cluster")
        s, p = t.cluster_sightings, t.probes
        with self.engine.begin() as conn:
            crop = conn.execute(select(p.c.crop_jpeg).join(s, s.c.face_id == p.c.face_id).where(
                s.c.cluster_id == cluster_id, s.c.face_id == face_id, p.c.purged_at.is_(None))).scalar_one_or_none()
            if crop is None:
                raise ClusterNotFound(cluster_id)
            self.audit.append(conn, viewer.name, str(viewer.role), "cluster_view", reason=reason.strip() or "-",
                              details={"cluster_id": cluster_id, "part": "crop", "face_id": face_id})
            return bytes(crop)

    def searchable_clusters(self, model_id: str | None, cluster_id: str | None = None) -> list[SearchableCluster]:
        """Confirmed clusters of ``model_id`` with a template; ``cluster_id``: only that one, of any model
        (ClusterNotFound when unknown; ClusterWrongState unless confirmed with a template)."""
        c = t.clusters
        query = select(c.c.cluster_id, c.c.revision, c.c.template, c.c.model_id, c.c.status)
        with self.engine.connect() as conn:
            if cluster_id is None:
                rows = conn.execute(query.where(c.c.status == ClusterStatus.CONFIRMED, c.c.model_id == model_id,
                                                c.c.template.is_not(None)).order_by(c.c.cluster_id)).all()
            else:
                rows = conn.execute(query.where(c.c.cluster_id == cluster_id)).all()
                if not rows:
                    raise ClusterNotFound(cluster_id)
                if rows[0].status != ClusterStatus.CONFIRMED or rows[0].template is None:
                    raise ClusterWrongState(cluster_id, rows[0].status, "a search (confirm it first)")
        return [SearchableCluster(r.cluster_id, r.revision, bytes(r.template), r.model_id) for r in rows]

    # -- searches -----------------------------------------------------------------------------------------------

    def record_cluster_search(self, cluster_id: str, revision: int, search: dict[str, Any],
                              candidates: list[dict[str, Any]], actor: str, role: str, reason: str = "") -> bool:
        """Keep one search of a cluster's template with its candidates (possible candidates for trained human
        review; not an identification), audited as ``cluster_re_search``. ``search``: ``trigger``, ``re_search_of``
        (the gallery change's event id, or None), ``source``, ``threshold``, ``top_k``, ``watch_lists``,
        ``model_id``. A gallery change already searched for this cluster is not kept twice (returns False)."""
        cs = t.cluster_searches
        with self.engine.begin() as conn:
            if search.get("re_search_of") is not None and conn.execute(select(cs.c.id).where(
                    cs.c.cluster_id == cluster_id, cs.c.re_search_of == search["re_search_of"])).first():
                return False
            now = self.clock()
            conn.execute(insert(cs).values(
                cluster_id=cluster_id, trigger=search["trigger"], re_search_of=search.get("re_search_of"),
                searched_at=now, actor=actor, source=search["source"], revision=revision,
                threshold=search["threshold"], top_k=search["top_k"], watch_lists=canonical(search["watch_lists"]),
                model_id=search["model_id"], candidates=canonical(candidates)))
            self.audit.append(conn, actor, role, "cluster_re_search", reason=reason, details={
                **search, "cluster_id": cluster_id, "revision": revision, "searched_at": now.isoformat(),
                "candidates": [[c["subject_id"], c["watch_list"], c["score"]] for c in candidates]})
            return True
