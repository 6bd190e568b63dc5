"""Cluster routes of the review API: clusters of unknown faces seen at several stores (:mod:`rfr.review.clusters`),
leads for trained human review, never identifications.

Reviewers, supervisors and auditors read them (``GET /v1/clusters``, ``GET /v1/clusters/{id}``: the view audited as
``cluster_view``, with ``reason``); reviewers and supervisors confirm, dismiss, split and search them, each step
audited with who, when and ``reason``. A search of the custody gallery goes through the service's Milvus gallery
(:func:`open_gallery_searcher`: the review store keeps no templates of enrolled photos); 503 ``gallery_unavailable``
when it cannot be reached. Refusals: 404 ``cluster_not_found``, 409 ``wrong_state``, 403 ``role_not_allowed``, 422
``reason_required``, ``nothing_ticked``, ``nothing_left``, ``not_in_cluster``, ``model_mismatch``.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from rfr.core.settings import Settings
from rfr.gallery.base import GalleryError
from rfr.review.cluster_views import ClusterStatus, ClusterSummary, ClusterView
from rfr.review.research import SubjectSearcher, search_cluster
from rfr.review.users import Principal
from services.review.api_models import REASON
from services.review.auth import CASE_VIEWERS, DECIDERS, Guards, api_error
from services.review.bounds import MAX_INT, MAX_NAME, MAX_NOTE, MAX_REASON
from services.review.context import ApiContext

ClusterId = Annotated[str, Path(min_length=1, max_length=MAX_NAME, description="The cluster id")]


class ClusterStepIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: str = Field(min_length=1, max_length=MAX_REASON, description=REASON)
    note: str = Field(default="", max_length=MAX_NOTE)


class ClusterSplitIn(ClusterStepIn):
    face_ids: list[Annotated[str, Field(max_length=MAX_NAME)]] = Field(
        min_length=1, max_length=500, description="The sightings that are NOT the same person: they leave the cluster.")


class ClusterSearchOut(BaseModel):
    notice: str = "Possible candidates for trained human review; not an identification."
    candidates: list[dict[str, Any]]


def cluster_routes(ctx: ApiContext, guards: Guards) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["clusters"])
    Viewer = Annotated[Principal, guards(CASE_VIEWERS)]
    Decider = Annotated[Principal, guards(DECIDERS)]

    @router.get("/clusters")
    def clusters(_: Viewer, status: ClusterStatus | None = None, limit: Annotated[int, Query(ge=1, le=500)] = 50,
                 offset: Annotated[int, Query(ge=0, le=MAX_INT)] = 0) -> list[ClusterSummary]:
        """Clusters pending first, then the most recently reported; ``status`` filters."""
        return ctx.store.clusters(status, limit, offset)

    @router.get("/clusters/{cluster_id}")
    def cluster(cluster_id: ClusterId, principal: Viewer,
                reason: Annotated[str, Query(min_length=1, max_length=MAX_REASON, description=REASON)]) -> ClusterView:
        """The cluster with its sightings, searches and decision (audited as ``cluster_view`` with ``reason``)."""
        return ctx.store.cluster(cluster_id, principal, reason)

    @router.post("/clusters/{cluster_id}/confirm")
    def confirm(cluster_id: ClusterId, principal: Decider, body: ClusterStepIn) -> ClusterView:
        """One person worth investigating: a lead to search, never an identification."""
        return ctx.store.confirm_cluster(cluster_id, principal, body.reason, body.note)

    @router.post("/clusters/{cluster_id}/dismiss")
    def dismiss(cluster_id: ClusterId, principal: Decider, body: ClusterStepIn) -> ClusterView:
        """Not one person, or not worth investigating (a later revision does not re-open it)."""
        return ctx.store.dismiss_cluster(cluster_id, principal, body.reason, body.note)

    @router.post("/clusters/{cluster_id}/split")
    def split(cluster_id: ClusterId, principal: Decider, body: ClusterSplitIn) -> ClusterView:
        """The sightings named leave the cluster for good; the rest is pending again."""
        return ctx.store.split_cluster(cluster_id, principal, body.face_ids, body.reason, body.note)

    @router.post("/clusters/{cluster_id}/search")
    def search(cluster_id: ClusterId, principal: Decider, body: ClusterStepIn) -> ClusterSearchOut:
        """Search a confirmed cluster's fused template against the whole custody gallery now (kept and audited)."""
        try:
            return ClusterSearchOut(candidates=run_cluster_search(ctx, cluster_id, principal, body.reason))
        except SearchUnavailable as exc:
            raise api_error(503, "gallery_unavailable", str(exc)[:500]) from exc

    return router


class SearchUnavailable(Exception):
    """The custody gallery cannot be searched now (no settings, or Milvus does not answer)."""


def open_gallery_searcher(settings: Settings) -> SubjectSearcher:
    """The Milvus gallery of ``settings`` (pymilvus is loaded only when a search needs it)."""
    from rfr.gallery.milvus import open_gallery

    return open_gallery(settings)


def run_cluster_search(ctx: ApiContext, cluster_id: str, principal: Principal, reason: str) -> list[dict[str, Any]]:
    """:func:`rfr.review.research.search_cluster` through the service's gallery (:func:`open_gallery_searcher`,
    looked up at each call), closed after. Raises :class:`SearchUnavailable` and the review refusals."""
    if ctx.settings is None:
        raise SearchUnavailable("this review service was started without its settings: it cannot reach the gallery")
    try:
        gallery = open_gallery_searcher(ctx.settings)
    except (GalleryError, OSError) as exc:
        raise SearchUnavailable(f"the gallery is not available: {exc}") from exc
    try:
        return search_cluster(ctx.store, cluster_id, principal, reason, gallery, ctx.settings.match)
    except (GalleryError, OSError) as exc:
        raise SearchUnavailable(f"the gallery search failed: {exc}") from exc
    finally:
        close = getattr(gallery, "close", None)
        if callable(close):
            close()
