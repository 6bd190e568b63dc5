"""Pages of clusters of unknown faces (:mod:`rfr.review.clusters`): stills that may show one person not found in
any gallery, seen at several stores; a lead for trained human review, never an identification.

Routes (reviewers, supervisors and auditors see; reviewers and supervisors act, like a case's decisions):

* ``GET /clusters``: the list, pending first (filter ``status``; paged);
* ``GET /clusters/{id}``: the sightings' face crops side by side with store, camera, time and similarity, the
  steps, the searches against the custody gallery; its view audited (``cluster_view``);
* ``GET /clusters/{id}/crop?face=...``: a sighting's crop, audited (``cluster_view``, part ``crop``);
* ``POST /clusters/{id}/confirm``, ``/dismiss``, ``/split`` (form: ``reason``, ``note``, the ``face`` boxes ticked)
  and ``/search`` (the whole custody gallery now, through the Milvus gallery of the service's settings:
  :func:`services.review.routes_clusters.run_cluster_search`), each with its CSRF token, answered with a redirect
  to the cluster.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from rfr.review import workflow as wf
from rfr.review.cluster_views import ClusterStatus
from rfr.review.clusters import ClusterNotFound, ClusterWrongState
from rfr.review.users import Principal
from services.review import routes_clusters
from services.review.auth import CASE_VIEWERS, DECIDERS
from services.review.bounds import MAX_NAME, MAX_NOTE, MAX_REASON
from services.review.context import ApiContext
from services.review.routes_cases import image_response
from services.review.web.case_model import refusal_status
from services.review.web.security import CSRF, PageError, page_principal, render

logger = logging.getLogger(__name__)

PAGE_SIZE = 50
MAX_TICKED = 500
ClusterId = Annotated[str, Path(min_length=1, max_length=MAX_NAME)]
Viewer = Annotated[Principal, page_principal(CASE_VIEWERS)]
Decider = Annotated[Principal, page_principal(DECIDERS)]
Csrf = Annotated[None, CSRF]
DONE = {"confirmed": "The cluster is confirmed: a lead to search, not an identification.",
        "dismissed": "The cluster is dismissed.",
        "split": "The sightings ticked left the cluster; the rest waits for a decision.",
        "searched": "The custody gallery was searched; the result is below."}
TITLES = {"cluster_not_found": "No such cluster", "wrong_state": "Not in this state", "reason_required":
          "Reason needed", "nothing_ticked": "Nothing ticked", "nothing_left": "Every sighting ticked",
          "not_in_cluster": "Not in this cluster", "model_mismatch": "Another model", "role_not_allowed":
          "Not permitted"}


def cluster_url(cluster_id: str, **query: str) -> str:
    return f"/clusters/{quote(cluster_id, safe='')}" + (f"?{urlencode(query)}" if query else "")


@contextmanager
def refusals(back: str) -> Iterator[None]:
    """A refusal of the review rules as the error page, with a link back to the cluster."""
    try:
        yield
    except wf.ReviewError as exc:
        logger.info("cluster step refused: %s", exc)
        status = 404 if isinstance(exc, ClusterNotFound) else 409 if isinstance(exc, ClusterWrongState) else (
            refusal_status(exc))
        raise PageError(status, TITLES.get(exc.reason, "Refused"), exc.detail or str(exc), back=back) from exc


async def cluster_form(request: Request) -> tuple[dict[str, str], list[str]]:
    """The posted text fields, and the ``face`` boxes ticked; 422 when a field is over its bound."""
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    faces = [v for v in form.getlist("face") if isinstance(v, str)]
    if len(fields.get("reason", "")) > MAX_REASON or len(fields.get("note", "")) > MAX_NOTE or (
            len(faces) > MAX_TICKED or any(len(f) > MAX_NAME for f in faces)):
        raise PageError(422, "Too long", f"The reason is at most {MAX_REASON} characters, the note {MAX_NOTE}.")
    return fields, faces


Posted = Annotated[tuple[dict[str, str], list[str]], Depends(cluster_form)]


def cluster_pages(ctx: ApiContext) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/clusters", response_class=HTMLResponse)
    def clusters(request: Request, _: Viewer, status: Annotated[str, Query(max_length=16)] = "",
                 page: Annotated[int, Query(ge=1, le=10_000)] = 1) -> Response:
        wanted = status if status in {s.value for s in ClusterStatus} else None
        items = ctx.store.clusters(wanted, PAGE_SIZE + 1, (page - 1) * PAGE_SIZE)
        keep = {"status": wanted} if wanted else {}
        return render(request, "clusters.html", {
            "title": "Clusters", "items": items[:PAGE_SIZE], "counts": ctx.store.cluster_counts(),
            "status": wanted or "", "statuses": [s.value for s in ClusterStatus], "page": page,
            "prev_url": "/clusters?" + urlencode({**keep, "page": page - 1}) if page > 1 else None,
            "next_url": "/clusters?" + urlencode({**keep, "page": page + 1}) if len(items) > PAGE_SIZE else None,
            "cluster_url": cluster_url})

    @router.get("/clusters/{cluster_id}", response_class=HTMLResponse)
    def cluster(request: Request, cluster_id: ClusterId, principal: Viewer,
                done: Annotated[str, Query(max_length=16)] = "") -> Response:
        with refusals("/clusters"):
            view = ctx.store.cluster(cluster_id, principal)
        return render(request, "cluster.html", {
            "title": f"Cluster {cluster_id}", "cluster": view, "done": DONE.get(done),
            "can_act": principal.role in DECIDERS and view.status not in ("merged", "purged"),
            "can_search": principal.role in DECIDERS and view.status == "confirmed",
            "crop_url": lambda face: cluster_url(cluster_id) + "/crop?" + urlencode({"face": face}),
            "cluster_url": cluster_url, "show_scores": ctx.review_settings.show_scores})

    @router.get("/clusters/{cluster_id}/crop", response_class=Response)
    def crop(cluster_id: ClusterId, principal: Viewer, face: Annotated[str, Query(max_length=MAX_NAME)]) -> Response:
        try:
            return image_response(ctx.store.cluster_crop(cluster_id, face, principal))
        except ClusterNotFound as exc:
            raise PageError(404, "No crop", "No kept crop of this sighting (unknown, or purged).") from exc

    def step(cluster_id: str, principal: Principal, fields: dict[str, str], faces: list[str], what: str) -> Response:
        back = cluster_url(cluster_id)
        reason, note = fields.get("reason", ""), fields.get("note", "")
        with refusals(back):
            if what == "confirmed":
                ctx.store.confirm_cluster(cluster_id, principal, reason, note)
            elif what == "dismissed":
                ctx.store.dismiss_cluster(cluster_id, principal, reason, note)
            else:
                ctx.store.split_cluster(cluster_id, principal, faces, reason, note)
        return RedirectResponse(cluster_url(cluster_id, done=what), status_code=303)

    @router.post("/clusters/{cluster_id}/confirm", response_model=None)
    def confirm(cluster_id: ClusterId, principal: Decider, _: Csrf, form: Posted) -> Response:
        return step(cluster_id, principal, *form, "confirmed")

    @router.post("/clusters/{cluster_id}/dismiss", response_model=None)
    def dismiss(cluster_id: ClusterId, principal: Decider, _: Csrf, form: Posted) -> Response:
        return step(cluster_id, principal, *form, "dismissed")

    @router.post("/clusters/{cluster_id}/split", response_model=None)
    def split(cluster_id: ClusterId, principal: Decider, _: Csrf, form: Posted) -> Response:
        return step(cluster_id, principal, *form, "split")

    @router.post("/clusters/{cluster_id}/search", response_model=None)
    def search(cluster_id: ClusterId, principal: Decider, _: Csrf, form: Posted) -> Response:
        run_search(ctx, cluster_id, principal, form[0].get("reason", ""))
        return RedirectResponse(cluster_url(cluster_id, done="searched"), status_code=303)

    return router


def run_search(ctx: ApiContext, cluster_id: str, principal: Principal, reason: str) -> None:
    """Search the cluster against the whole custody gallery now (:func:`routes_clusters.run_cluster_search`);
    PageError 503 when the gallery cannot be reached or the service has no settings."""
    back = cluster_url(cluster_id)
    try:
        with refusals(back):
            routes_clusters.run_cluster_search(ctx, cluster_id, principal, reason)
    except routes_clusters.SearchUnavailable as exc:
        logger.warning("cluster %s: gallery search failed: %s", cluster_id, exc)
        raise PageError(503, "Gallery unavailable", str(exc), back=back) from exc
