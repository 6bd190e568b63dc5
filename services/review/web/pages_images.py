"""The images of a case for the pages (the signed-in cookie, not a bearer token): the probe crop, the still, and
candidates' enrolled photos. The same answers as the API's image routes: real content type, ``no-store``; the
security headers (CSP, nosniff) come from :func:`services.review.web.security.security_headers`. Only reviewers,
supervisors and auditors see them.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import Response

from rfr.review.users import Principal
from services.review.auth import CASE_VIEWERS
from services.review.context import ApiContext
from services.review.routes_cases import gallery_photo_response, probe_response, still_response
from services.review.web.security import page_principal

CaseId = Annotated[int, Path(ge=1)]
Viewer = Annotated[Principal, page_principal(CASE_VIEWERS)]


def image_pages(ctx: ApiContext) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/cases/{case_id}/probe.jpg", response_class=Response)
    def probe(case_id: CaseId, _: Viewer) -> Response:
        return probe_response(ctx, case_id)

    @router.get("/cases/{case_id}/still", response_class=Response)
    def still(case_id: CaseId, _: Viewer) -> Response:
        return still_response(ctx, case_id)

    @router.get("/gallery-photos/{gallery_face_id}", response_class=Response)
    def gallery_photo(gallery_face_id: Annotated[str, Path(max_length=256)], _: Viewer) -> Response:
        return gallery_photo_response(ctx, gallery_face_id)

    return router
