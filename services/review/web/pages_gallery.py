"""The gallery page (administrators): subjects and their enrolled photos by watch-list, as the review store knows
them (:mod:`rfr.review.gallery_index`), erased ones shown as erased, and a form per subject to erase them with a
mandatory reason (:mod:`~services.review.web.gallery_erase`: announced on the gallery topic first, then deleted from
Milvus; the review service records the erasure, audited as ``gallery_erasure``, when it reads the announcement).

Routes: ``GET /gallery`` (filters ``watch_list``, ``subject`` contains, ``erased=hide``; paged), ``GET
/gallery/photos/{gallery_face_id}`` (an enrolled photo, for administrators, its read audited as ``photo_view``: the
case pages' photo route admits the case viewers only), ``POST /gallery/{watch_list}/{subject_id}/erase`` (form:
``reason``, ``confirm``, CSRF).
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, Response

from rfr.core.blobstore import BlobCorrupt, BlobNotFound
from rfr.review import gallery_index
from rfr.review.audit import AuditAction
from rfr.review.users import Principal
from services.review.auth import ADMINISTRATORS
from services.review.bounds import MAX_INT, MAX_NAME, MAX_REASON
from services.review.context import ApiContext
from services.review.routes_cases import image_response
from services.review.web.gallery_erase import MIN_REASON, ErasureRefused, GalleryEraser
from services.review.web.paging import Pager, show_time
from services.review.web.security import CSRF, PageError, page_principal, render

logger = logging.getLogger(__name__)

PAGE = 25
"""Subjects per page."""


def gallery_pages(ctx: ApiContext, eraser: GalleryEraser) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    engine = ctx.store.engine

    @router.get("/gallery", response_class=HTMLResponse)
    def gallery(request: Request, _: Annotated[Principal, page_principal(ADMINISTRATORS)],
                watch_list: Annotated[str, Query(max_length=MAX_NAME)] = "",
                subject: Annotated[str, Query(max_length=MAX_NAME)] = "", erased: str = "",
                offset: Annotated[int, Query(ge=0, le=MAX_INT)] = 0) -> HTMLResponse:
        """Subjects and photos by watch-list, with an erase form per subject."""
        found = gallery_index.gallery_page(engine, watch_list.strip() or None, subject.strip() or None,
                                           include_erased=erased != "hide", limit=PAGE, offset=offset)
        params = {"watch_list": watch_list, "subject": subject, "erased": erased}
        return render(request, "gallery.html", {
            "title": "Gallery", "lists": gallery_index.watch_lists(engine), "page": found, "params": params,
            "pager": Pager("/gallery", params, found.total, found.limit, found.offset), "show_time": show_time,
            "min_reason": MIN_REASON})

    @router.get("/gallery/photos/{gallery_face_id}", response_class=Response)
    def photo(gallery_face_id: Annotated[str, Path(max_length=MAX_NAME)],
              principal: Annotated[Principal, page_principal(ADMINISTRATORS)]) -> Response:
        """An enrolled photo (from the gallery photos' store, not cached); 404 when unknown, not kept or erased.
        The read is audited (``photo_view``, reason ``gallery page``)."""
        ref = ctx.store.gallery_photo(gallery_face_id)
        if ref is None:
            raise PageError(404, "No photo", "No kept photo for this gallery face (unknown, not kept, or erased).")
        try:
            data = ctx.photo_store.get(ref)
        except (BlobNotFound, BlobCorrupt, ValueError) as exc:
            raise PageError(404, "No photo", "The photo is no longer in the blob store.") from exc
        except OSError as exc:
            raise PageError(503, "Blob store unavailable", "The blob store is not available; try again.") from exc
        ctx.audit.append_now(principal.name, str(principal.role), AuditAction.PHOTO_VIEW, reason="gallery page",
                             details={"gallery_face_id": gallery_face_id, "via": "gallery page"})
        return image_response(data)

    @router.post("/gallery/{watch_list}/{subject_id}/erase", response_class=HTMLResponse)
    def erase(request: Request, watch_list: str, subject_id: str,
              principal: Annotated[Principal, page_principal(ADMINISTRATORS)], _: Annotated[None, CSRF],
              reason: Annotated[str, Form()] = "", confirm: Annotated[str, Form()] = "") -> HTMLResponse:
        """Erase every photo of the subject on the watch-list (announced first, then deleted from Milvus)."""
        if len(reason) > MAX_REASON:
            raise PageError(422, "Reason too long", f"The reason is at most {MAX_REASON} characters.")
        if confirm != "yes":
            raise PageError(422, "Not confirmed", f"Tick the box confirming the erasure of {subject_id} from "
                            f"{watch_list}, then erase again.")
        try:
            done = eraser.erase(watch_list, subject_id, principal.name, reason)
        except ErasureRefused as exc:
            logger.info("gallery erasure refused (%s)", exc.reason)
            raise PageError(exc.status, "Not erased" if exc.reason != "announced_not_erased" else "Not finished",
                            exc.message) from exc
        return render(request, "gallery_erased.html", {"title": "Subject erased", "done": done})

    return router
