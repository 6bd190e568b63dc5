"""Case routes of the review API: the queue, a case (audited view), its images, and the people's steps.

Only reviewers, supervisors and auditors see a case, its probe, its still or a candidate's photo (administrators
see the queue, which names no candidate; case systems see none of it). Images are answered with their real
content type (from their bytes) and ``Cache-Control: no-store``, so no browser or proxy keeps a face, and every
read that hands one out is audited first: ``case_view`` with ``{"part": "probe" | "still"}`` for a case's images,
``photo_view`` with the gallery face id for an enrolled photo (tied to the case given as ``case_id`` when the face
is one of its candidates), with the ``reason`` given or ``image of case N``. Enrolled photos are read from their
own blob store (:attr:`ApiContext.photo_store`), stills from ``blobs``.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from sqlalchemy import select

from rfr.core.blobstore import BlobCorrupt, BlobNotFound, BlobStore
from rfr.core.image_headers import sniff_format
from rfr.review import tables as t
from rfr.review import workflow as wf
from rfr.review.audit import AuditAction
from rfr.review.users import Principal
from rfr.review.views import CaseView, QueueItem
from services.review.api_models import REASON, DecisionIn, NoteIn
from services.review.auth import CASE_VIEWERS, DECIDERS, QUEUE_READERS, SUPERVISORS, Guards, api_error
from services.review.bounds import MAX_INT, MAX_NAME, MAX_REASON, CaseId, UtcTime
from services.review.context import ApiContext
from services.review.metrics import ReviewMetrics

MEDIA_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "bmp": "image/bmp",
               "tiff": "image/tiff", "heic": "image/heic", "heif": "image/heif"}
NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
IMAGE: dict[int | str, dict[str, Any]] = {
    200: {"content": {t: {} for t in sorted(set(MEDIA_TYPES.values()))}, "description": "The image"}}
FINAL_STATES = frozenset({wf.CaseState.LEAD, wf.CaseState.NO_LEAD})

ImageReason = Annotated[str, Query(max_length=MAX_REASON, description="Why (the case or crime reference), audited "
                                    "with the read; default: 'image of case N' (or 'gallery photo')")]
ForCase = Annotated[int | None, Query(ge=1, le=MAX_INT, description="The case whose candidate this photo is "
                                      "(audited with the read when it is one of its candidates)")]
FaceId = Annotated[str, Path(max_length=MAX_NAME, description="The gallery face id")]


def image_response(data: bytes) -> Response:
    """``data`` with the content type its bytes show (octet-stream when unknown), never cached."""
    media = MEDIA_TYPES.get(sniff_format(data[:64]) or "", "application/octet-stream")
    return Response(content=data, media_type=media, headers=NO_STORE)


def _labels(body: DecisionIn) -> list[wf.CandidateLabel]:
    return [wf.CandidateLabel(item.rank, item.label, item.note) for item in body.labels]


def count_step(metrics: ReviewMetrics | None, view: CaseView, actor: Principal) -> None:
    """Count ``actor``'s latest step on ``view`` by its stage only, the final decision by its outcome when the step
    made the case final, and a disagreement when a verification escalated the case. A step's own outcome is never
    counted: the first decision's must not show before the blind verification."""
    if metrics is None:
        return
    mine = [d for d in view.decisions if d.actor == actor.name]
    if not mine:
        return
    step = mine[-1]
    metrics.steps.labels(step.stage).inc()
    if view.state in FINAL_STATES and view.outcome is not None:
        metrics.decisions.labels(view.outcome).inc()
    if step.stage == wf.Stage.VERIFICATION and view.state == wf.CaseState.ESCALATED:
        metrics.disagreements.inc()


def after_step(ctx: ApiContext, view: CaseView, actor: Principal) -> CaseView:
    """After ``actor``'s step on ``view``: count it, and wake the decision publisher when the case is final."""
    count_step(ctx.metrics, view, actor)
    if view.state in FINAL_STATES:
        ctx.on_final()
    return view


def case_routes(ctx: ApiContext, guards: Guards) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["cases"])

    @router.get("/queue")
    def queue(
        _: Annotated[Principal, guards(QUEUE_READERS)],
        state: Annotated[wf.CaseState | None, Query(description="Default: every open state")] = None,
        watch_list: str | None = None, retailer_id: str | None = None,
        older_than: Annotated[UtcTime | None, Query(description="Only cases created before this")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50, offset: Annotated[int, Query(ge=0, le=MAX_INT)] = 0,
    ) -> list[QueueItem]:
        """Cases oldest first, with filters and paging. A queue row names no candidate and no decision."""
        return ctx.store.queue(state, watch_list, retailer_id, older_than, limit, offset)

    @router.get("/cases/{case_id}")
    def case(case_id: CaseId, principal: Annotated[Principal, guards(CASE_VIEWERS)],
             reason: Annotated[str, Query(min_length=1, max_length=256, description=REASON)]) -> CaseView:
        """The case: probe, search, candidates and the decisions this viewer may see (a verifier decides blind).
        Every view is audited with ``reason``."""
        return ctx.store.case(case_id, principal, reason)

    @router.get("/cases/{case_id}/probe.jpg", response_class=Response, responses=IMAGE)
    def probe_crop(case_id: CaseId, principal: Annotated[Principal, guards(CASE_VIEWERS)],
                   reason: ImageReason = "") -> Response:
        """The aligned probe face crop (JPEG); 410 once retention purged it. Audited (case_view, part probe)."""
        return probe_response(ctx, case_id, principal, reason, "api")

    @router.get("/cases/{case_id}/still", response_class=Response, responses=IMAGE)
    def still(case_id: CaseId, principal: Annotated[Principal, guards(CASE_VIEWERS)],
              reason: ImageReason = "") -> Response:
        """The submitted still the probe was found in; 404 when it was not kept or was purged. Audited
        (case_view, part still)."""
        return still_response(ctx, case_id, principal, reason, "api")

    @router.get("/gallery-photos/{gallery_face_id}", response_class=Response, responses=IMAGE)
    def gallery_photo(gallery_face_id: FaceId, principal: Annotated[Principal, guards(CASE_VIEWERS)],
                      reason: ImageReason = "", case_id: ForCase = None) -> Response:
        """An enrolled photo of a candidate (by its gallery face id); 404 when unknown, not kept or erased. Audited
        (photo_view)."""
        return gallery_photo_response(ctx, gallery_face_id, principal, reason, "api", case_id)

    @router.post("/cases/{case_id}/decisions")
    def decide(case_id: CaseId, body: DecisionIn, principal: Annotated[Principal, guards(DECIDERS)]) -> CaseView:
        """A pending case's first decision, or an awaiting case's blind verification (never one's own)."""
        return after_step(ctx, ctx.store.decide(case_id, principal, _labels(body), body.reason, body.note), principal)

    @router.post("/cases/{case_id}/escalate")
    def escalate(case_id: CaseId, body: NoteIn, principal: Annotated[Principal, guards(DECIDERS)]) -> CaseView:
        """Send a pending or awaiting case to a supervisor, with a note."""
        return after_step(ctx, ctx.store.escalate(case_id, principal, body.note, body.reason), principal)

    @router.post("/cases/{case_id}/resolve")
    def resolve(case_id: CaseId, body: DecisionIn, principal: Annotated[Principal, guards(SUPERVISORS)]) -> CaseView:
        """A supervisor's final decision on an escalated case (not one they decided as first or verifier)."""
        return after_step(ctx, ctx.store.resolve(case_id, principal, _labels(body), body.reason, body.note), principal)

    @router.post("/cases/{case_id}/close")
    def close(case_id: CaseId, body: NoteIn, principal: Annotated[Principal, guards(SUPERVISORS)]) -> CaseView:
        """Close a lead's case: from then retention's closed_lead_days runs."""
        return ctx.store.close(case_id, principal, body.note, body.reason)

    return router


def case_image_reason(case_id: int, reason: str) -> str:
    """The reason audited with an image of case ``case_id``: the one given, else ``image of case N``."""
    return reason.strip()[:MAX_REASON] or f"image of case {case_id}"


def _audit_case_image(ctx: ApiContext, case_id: int, viewer: Principal, reason: str, part: str, via: str) -> None:
    ctx.audit.append_now(viewer.name, str(viewer.role), AuditAction.CASE_VIEW,
                         reason=case_image_reason(case_id, reason), case_id=case_id, details={"part": part, "via": via})


def probe_response(ctx: ApiContext, case_id: int, viewer: Principal, reason: str = "", via: str = "api") -> Response:
    """The case's aligned probe crop; 410 once retention purged it. The read is audited first (``case_view`` of
    ``viewer``, details ``{"part": "probe", "via": via}``, with ``reason`` or ``image of case N``)."""
    data = ctx.store.probe_crop(case_id)
    if data is None:
        raise api_error(410, "purged", f"the probe of case {case_id} was purged by retention")
    _audit_case_image(ctx, case_id, viewer, reason, "probe", via)
    return image_response(data)


def still_response(ctx: ApiContext, case_id: int, viewer: Principal, reason: str = "", via: str = "api") -> Response:
    """The still the case's probe was found in; 404 when it was not kept or was purged. The read is audited first
    (as :func:`probe_response`, part ``still``)."""
    ref = ctx.store.probe_still_ref(case_id)
    if ref is None:
        raise api_error(404, "no_still", f"the still of case {case_id} was not kept or was purged")
    data = blob_data(ctx.blobs, ref, "still")
    _audit_case_image(ctx, case_id, viewer, reason, "still", via)
    return image_response(data)


def gallery_photo_response(ctx: ApiContext, gallery_face_id: str, viewer: Principal, reason: str = "",
                           via: str = "api", case_id: int | None = None) -> Response:
    """An enrolled photo by its gallery face id (from the gallery photos' store); 404 when unknown, not kept or
    erased. The read is audited first (``photo_view`` of ``viewer`` with the face id, and ``case_id`` when the
    face is one of that case's candidates; ``reason`` or ``image of case N`` / ``gallery photo``)."""
    ref = ctx.store.gallery_photo(gallery_face_id)
    if ref is None:
        raise api_error(404, "no_photo", "no kept photo for this gallery face")
    data = blob_data(ctx.photo_store, ref, "gallery photo")
    of_case = case_id if case_id is not None and _is_candidate(ctx, case_id, gallery_face_id) else None
    why = reason.strip()[:MAX_REASON] or (f"image of case {of_case}" if of_case is not None else "gallery photo")
    ctx.audit.append_now(viewer.name, str(viewer.role), AuditAction.PHOTO_VIEW, reason=why, case_id=of_case,
                         details={"gallery_face_id": gallery_face_id, "via": via})
    return image_response(data)


def _is_candidate(ctx: ApiContext, case_id: int, gallery_face_id: str) -> bool:
    c = t.candidates.c
    with ctx.store.engine.connect() as conn:
        return conn.execute(select(c.rank).where(c.case_id == case_id, c.gallery_face_id == gallery_face_id)
                            .limit(1)).first() is not None


def blob_data(blobs: BlobStore, ref: str, what: str) -> bytes:
    """The bytes at ``ref`` in ``blobs``; the API error (404, 500, 503) naming ``what`` when they are gone, corrupt
    or the store is down."""
    try:
        return blobs.get(ref)
    except (BlobNotFound, ValueError) as exc:
        raise api_error(404, "not_found", f"the {what} is no longer in the blob store") from exc
    except BlobCorrupt as exc:
        raise api_error(500, "corrupt", f"the stored {what} does not match its reference") from exc
    except OSError as exc:
        raise api_error(503, "unavailable", "the blob store is not available; retry later") from exc
