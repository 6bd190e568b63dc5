"""The disclosure pack of a decided case (supervisors and auditors): ``GET /cases/{id}/disclosure`` (a printable,
self-contained page: images inline as ``data:`` URIs, print CSS) and ``GET /cases/{id}/disclosure.pdf``.

Both need a ``reason`` (who asked for the pack, the case or crime reference; at least 3 characters): without one the
page asks for it. Each export is an ``export`` audit entry with the case id, the format and the reason, written
before the pack is built (:func:`rfr.review.disclosure.gather`). The case's reviewers cannot export it: see
:mod:`rfr.review.disclosure`.
"""

from __future__ import annotations

import base64
import json
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from rfr.core.image_headers import sniff_format
from rfr.review import disclosure as dc
from rfr.review.users import Principal, Role
from services.review.bounds import MAX_REASON, CaseId
from services.review.context import ApiContext
from services.review.routes_cases import MEDIA_TYPES
from services.review.web.disclosure_pdf import pack_pdf
from services.review.web.paging import show_time
from services.review.web.search_facts import score_scale, search_facts
from services.review.web.security import page_principal, render

DISCLOSERS = frozenset({Role.SUPERVISOR, Role.AUDITOR})


def data_uri(image: dc.PackImage | None) -> str | None:
    """``image`` as a ``data:`` URI (the page is one file, printable and keepable); None for no image."""
    if image is None:
        return None
    media = MEDIA_TYPES.get(sniff_format(image.data[:64]) or "", "application/octet-stream")
    return f"data:{media};base64,{base64.b64encode(image.data).decode()}"


def face_box(pack: dc.DisclosurePack) -> dict[str, float] | None:
    """The probe's box on the still as SVG coordinates (the still's own pixels), with a stroke width that shows at
    any size; None without a still whose size is known."""
    if pack.still is None or pack.still.size is None:
        return None
    box = pack.case.probe.box
    width, height = pack.still.size
    return {"width": width, "height": height, "x": box.get("x", 0.0), "y": box.get("y", 0.0),
            "w": box.get("width", 0.0), "h": box.get("height", 0.0), "stroke": max(2.0, max(width, height) / 250)}


def pack_context(pack: dc.DisclosurePack) -> dict[str, Any]:
    """What ``disclosure.html`` shows of ``pack``."""
    case = pack.case
    return {"title": f"Disclosure pack, case {case.id}", "pack": pack, "case": case,
            "crop_uri": data_uri(pack.crop), "still_uri": data_uri(pack.still), "box": face_box(pack),
            "photos": {c.candidate.rank: data_uri(c.photo) for c in pack.candidates},
            "audit_details": {e["seq"]: json.dumps(e["details"], sort_keys=True, ensure_ascii=False)
                              for e in pack.audit},
            "search_facts": search_facts(case.search), "score_scale": score_scale(case.search),
            "show_time": show_time}


def _ask(request: Request, case_id: int, reason: str, status: int = 200) -> HTMLResponse:
    error = None if status == 200 else f"Give the reason for this export ({dc.MIN_REASON} to {MAX_REASON} characters)."
    return render(request, "disclosure_form.html", {"title": f"Disclosure pack, case {case_id}", "case_id": case_id,
                                                    "reason": reason[:MAX_REASON], "error": error,
                                                    "min_reason": dc.MIN_REASON}, status)


def _reason_unfit(reason: str) -> bool:
    return not dc.MIN_REASON <= len(reason.strip()) <= MAX_REASON


def disclosure_pages(ctx: ApiContext) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    def _pack(case_id: int, principal: Principal, reason: str, fmt: str) -> dc.DisclosurePack:
        return dc.gather(ctx.store, ctx.blobs, case_id, principal, reason, fmt, photos=ctx.photo_store)

    @router.get("/cases/{case_id}/disclosure", response_class=HTMLResponse)
    def disclosure_html(request: Request, case_id: CaseId, principal: Annotated[Principal, page_principal(DISCLOSERS)],
                        reason: str = "") -> HTMLResponse:
        """The printable pack (audited as an export); asks for the reason first."""
        if _reason_unfit(reason):
            return _ask(request, case_id, reason, 422 if reason.strip() else 200)
        return render(request, "disclosure.html", pack_context(_pack(case_id, principal, reason, "html")))

    @router.get("/cases/{case_id}/disclosure.pdf", response_model=None)
    def disclosure_pdf(request: Request, case_id: CaseId, principal: Annotated[Principal, page_principal(DISCLOSERS)],
                       reason: str = "") -> Response:
        """The pack as PDF (audited as an export); asks for the reason first."""
        if _reason_unfit(reason):
            return _ask(request, case_id, reason, 422 if reason.strip() else 200)
        pdf = pack_pdf(_pack(case_id, principal, reason, "pdf"))
        return Response(pdf, media_type="application/pdf", headers={
            "Content-Disposition": f'attachment; filename="rfr-case-{case_id}-disclosure.pdf"'})

    return router
