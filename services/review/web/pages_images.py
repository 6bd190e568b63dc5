"""The images of a case for the pages (the signed-in cookie, not a bearer token): the probe crop, the still, and
candidates' enrolled photos. The same answers as the API's image routes: real content type, ``no-store``; the
security headers (CSP, nosniff) come from :func:`services.review.web.security.security_headers`. Only reviewers,
supervisors and auditors see them.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import Response

from rfr.core.blobstore import BlobCorrupt, BlobNotFound
from rfr.review.users import Principal
from services.review.auth import CASE_VIEWERS, api_error
from services.review.context import ApiContext
from services.review.routes_cases import image_response
from services.review.web.security import page_principal

CaseId = Annotated[int, Path(ge=1)]
Viewer = Annotated[Principal, page_principal(CASE_VIEWERS)]


def image_pages(ctx: ApiContext) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    def blob(ref: str, what: str) -> Response:
        try:
            return image_response(ctx.blobs.get(ref))
        except (BlobNotFound, ValueError) as exc:
            raise api_error(404, "not_found", f"the {what} is no longer in the blob store") from exc
        except BlobCorrupt as exc:
            raise api_error(500, "corrupt", f"the stored {what} does not match its reference") from exc
        except OSError as exc:
            raise api_error(503, "unavailable", "the blob store is not available; retry later") from exc

    @router.get("/cases/{case_id}/probe.jpg", response_class=Response)
    def probe(case_id: CaseId, _: Viewer) -> Response:
        data = ctx.store.probe_crop(case_id)
        if data is None:
            raise api_error(410, "purged", f"the probe of case {case_id} was purged by retention")
        return image_response(data)

    @router.get("/cases/{case_id}/still", response_class=Response)
    def still(case_id: CaseId, _: Viewer) -> Response:
        ref = ctx.store.probe_still_ref(case_id)
        if ref is None:
            raise api_error(404, "no_still", f"the still of case {case_id} was not kept or was purged")
        return blob(ref, "still")

    @router.get("/gallery-photos/{gallery_face_id}", response_class=Response)
    def gallery_photo(gallery_face_id: Annotated[str, Path(max_length=256)], _: Viewer) -> Response:
        ref = ctx.store.gallery_photo(gallery_face_id)
        if ref is None:
            raise api_error(404, "no_photo", "no kept photo for this gallery face")
        return blob(ref, "gallery photo")

    return router
