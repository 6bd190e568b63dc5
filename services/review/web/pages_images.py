"""The images of a case for the pages (the signed-in cookie, not a bearer token): the probe crop, the still, and
candidates' enrolled photos. The same answers as the API's image routes: real content type, ``no-store``; the
security headers (CSP, nosniff) come from :func:`services.review.web.security.security_headers`. Only reviewers,
supervisors and auditors see them.

Every read is audited like the API's (``case_view`` with ``{"part": "probe" | "still"}``, ``photo_view`` for an
enrolled photo). The case page links its images with the reason it was opened with (``?reason=...``, and the
case's id for a candidate's photo), so the image reads carry that reason; without one: ``image of case N``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from rfr.review.users import Principal
from services.review.auth import CASE_VIEWERS
from services.review.bounds import MAX_INT, MAX_NAME, MAX_REASON, CaseId
from services.review.context import ApiContext
from services.review.routes_cases import gallery_photo_response, probe_response, still_response
from services.review.web.security import page_principal

Viewer = Annotated[Principal, page_principal(CASE_VIEWERS)]
Reason = Annotated[str, Query(max_length=MAX_REASON)]
ForCase = Annotated[int | None, Query(ge=1, le=MAX_INT)]


def image_pages(ctx: ApiContext) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/cases/{case_id}/probe.jpg", response_class=Response)
    def probe(case_id: CaseId, principal: Viewer, reason: Reason = "") -> Response:
        return probe_response(ctx, case_id, principal, reason, "pages")

    @router.get("/cases/{case_id}/still", response_class=Response)
    def still(case_id: CaseId, principal: Viewer, reason: Reason = "") -> Response:
        return still_response(ctx, case_id, principal, reason, "pages")

    @router.get("/gallery-photos/{gallery_face_id}", response_class=Response)
    def gallery_photo(gallery_face_id: Annotated[str, Path(max_length=MAX_NAME)], principal: Viewer,
                      reason: Reason = "", case_id: ForCase = None) -> Response:
        return gallery_photo_response(ctx, gallery_face_id, principal, reason, "pages", case_id)

    return router
