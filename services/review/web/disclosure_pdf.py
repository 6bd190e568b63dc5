"""The disclosure pack as PDF (fpdf2): the same content as the printable page, images embedded.

A4 portrait, Helvetica (a PDF core font: Latin-1 text, so characters outside it are written as ``?``; the text is
searchable and extractable). The notice that a candidate list is never an identification opens the pack and ends
every page. The still is drawn with the probe's face box over it (a rectangle in the still's own pixel coordinates,
scaled as the image is). An image that cannot be decoded is named as such instead of drawn. The search is stated
in the printable page's rows and words (:func:`services.review.web.search_facts.search_facts`): its threshold policy,
the probe's quality and, for an incident, each still and what became of it.
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any, Literal

from fpdf import FPDF, XPos, YPos
from PIL import Image, ImageOps, UnidentifiedImageError

from rfr.review import disclosure as dc
from services.review.web.paging import show_time
from services.review.web.search_facts import score_scale, search_facts

logger = logging.getLogger(__name__)

LINE = 5.0  # mm, body line height
SMALL = 3.6  # mm, audit entries
CROP_MM = 45.0
STILL_MM = (125.0, 95.0)  # most width, height of the still
PHOTO_MM = (32.0, 40.0)


def latin1(text: object) -> str:
    """``text`` as the core font can write it (characters outside Latin-1 become ``?``)."""
    return str(text).encode("latin-1", "replace").decode("latin-1")


class PackPdf(FPDF):
    """A4 pages with the case and the notice in every page's footer: ``page N/total`` when ``total`` (the page count
    of a first rendering) is known, else ``page N``. fpdf2's page-count alias (``{nb}``) is off, so that text
    from people (notes, subject ids, reasons) is printed as given, ``{nb}`` included."""

    def __init__(self, case_id: int, total: int | None = None) -> None:
        super().__init__(orientation="P", unit="mm", format="A4")
        self.alias_nb_pages("")
        self.case_id = case_id
        self.total = total
        self.set_auto_page_break(auto=True, margin=18)
        self.set_margins(15, 15, 15)
        self.set_title(f"RFR disclosure pack, case {case_id}")
        self.set_author("RFR review service")

    def footer(self) -> None:
        self.set_y(-13)
        self.set_font("Helvetica", "", 7)
        of = f"/{self.total}" if self.total is not None else ""
        self.cell(0, 4, latin1(f"Case {self.case_id} - disclosure pack - a candidate list is never an "
                               f"identification - page {self.page_no()}{of}"), align="C")

    # -- writing helpers ------------------------------------------------------------------------------------------
    def heading(self, text: str, size: int = 13) -> None:
        if self.get_y() > self.page_break_trigger - 25:
            self.add_page()
        self.ln(2)
        self.set_font("Helvetica", "B", size)
        self.multi_cell(0, size * 0.5, latin1(text), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.ln(1)

    def para(self, text: str, size: float = 10, style: str = "", height: float = LINE,
             border: Literal[0, 1] = 0) -> None:
        self.set_font("Helvetica", style, size)
        self.multi_cell(0, height, latin1(text), border=border, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def fields(self, rows: list[tuple[str, object]], label_mm: float = 45.0) -> None:
        """Label / value lines (values wrap)."""
        for label, value in rows:
            self.set_font("Helvetica", "B", 9)
            self.cell(label_mm, LINE, latin1(label))
            self.set_font("Helvetica", "", 9)
            self.multi_cell(0, LINE, latin1("" if value is None else value), align="L", new_x=XPos.LMARGIN,
                            new_y=YPos.NEXT)

    def room(self, height: float) -> None:
        """Start a new page unless ``height`` mm fit on this one."""
        if self.get_y() + height > self.page_break_trigger:
            self.add_page()


def _pil(image: dc.PackImage | None) -> Image.Image | None:
    """The image decoded and EXIF-oriented, RGB; None when there is none or it does not decode."""
    if image is None:
        return None
    try:
        with Image.open(io.BytesIO(image.data)) as opened:
            oriented = ImageOps.exif_transpose(opened)
            return oriented.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        logger.info("disclosure pdf: an image does not decode: %s", exc)
        return None


def _absent(image: dc.PackImage | None, status: str) -> str:
    """Why an image is not drawn: ``status`` when there is none, else that its bytes do not decode."""
    return status if image is None else "kept, but not a readable image"


def _fit(size: tuple[int, int], most: tuple[float, float]) -> tuple[float, float]:
    scale = min(most[0] / size[0], most[1] / size[1])
    return size[0] * scale, size[1] * scale


def _probe(pdf: PackPdf, pack: dc.DisclosurePack) -> None:
    probe = pack.case.probe
    pdf.heading("Probe")
    crop, still = _pil(pack.crop), _pil(pack.still)
    crop_wh = _fit(crop.size, (CROP_MM, CROP_MM)) if crop else (CROP_MM, 10.0)
    still_wh = _fit(still.size, STILL_MM) if still else (STILL_MM[0], 10.0)
    pdf.room(max(crop_wh[1], still_wh[1]) + 12)
    top, left = pdf.get_y(), pdf.l_margin
    pdf.set_font("Helvetica", "", 8)
    pdf.set_xy(left, top)
    pdf.cell(crop_wh[0], 4, "Probe crop (aligned face)")
    pdf.set_xy(left + CROP_MM + 5, top)
    pdf.cell(still_wh[0], 4, "Still, with the face box")
    top += 5
    if crop is not None:
        pdf.image(crop, x=left, y=top, w=crop_wh[0], h=crop_wh[1], alt_text="probe crop")
    else:
        pdf.set_xy(left, top)
        pdf.multi_cell(CROP_MM, 4, latin1(f"Crop: {_absent(pack.crop, pack.crop_status)}"), align="L")
    sx = left + CROP_MM + 5
    if still is not None:
        pdf.image(still, x=sx, y=top, w=still_wh[0], h=still_wh[1], alt_text="still with the probe's face box")
        scale = still_wh[0] / still.size[0]
        box = probe.box
        pdf.set_draw_color(220, 0, 0)
        pdf.set_line_width(0.6)
        pdf.rect(sx + box.get("x", 0.0) * scale, top + box.get("y", 0.0) * scale, box.get("width", 0.0) * scale,
                 box.get("height", 0.0) * scale)
        pdf.set_draw_color(0, 0, 0)
        pdf.set_line_width(0.2)
    else:
        pdf.set_xy(sx, top)
        pdf.multi_cell(STILL_MM[0], 4, latin1(f"Still: {_absent(pack.still, pack.still_status)}"), align="L")
    pdf.set_xy(left, top + max(crop_wh[1], still_wh[1]) + 3)
    q = probe.quality
    pdf.fields([
        ("Retailer / store / camera", f"{probe.retailer_id} / {probe.store_id} / {probe.camera_id}"),
        ("Captured", show_time(probe.captured_at)), ("Received", show_time(probe.received_at)),
        ("Case reference", probe.case_ref or "(none given)"), ("Channel", probe.channel),
        ("Face id / submission", f"{probe.face_id} / {probe.submission_id}"),
        ("Face box (still px)", ", ".join(f"{k} {v:g}" for k, v in probe.box.items())),
        ("Quality", ", ".join(f"{k} {v}" for k, v in sorted(q.items()))),
        ("Probe kept", "purged by retention " + show_time(probe.purged_at) if probe.purged_at else "yes")])


def _search(pdf: PackPdf, pack: dc.DisclosurePack) -> None:
    pdf.heading("Search")
    pdf.fields([(fact.label, fact.value) for fact in search_facts(pack.case.search)])


def _candidates(pdf: PackPdf, pack: dc.DisclosurePack) -> None:
    pdf.heading(f"Candidates ({len(pack.candidates)})")
    for item in pack.candidates:
        c = item.candidate
        photo = _pil(item.photo)
        wh = _fit(photo.size, PHOTO_MM) if photo else (PHOTO_MM[0], 12.0)
        pdf.room(max(wh[1], 26) + 4)
        top, left = pdf.get_y(), pdf.l_margin
        if photo is not None:
            pdf.image(photo, x=left, y=top, w=wh[0], h=wh[1], alt_text=f"enrolled photo of candidate {c.rank}")
        else:
            pdf.set_font("Helvetica", "", 8)
            pdf.set_xy(left, top)
            pdf.multi_cell(PHOTO_MM[0], 4, latin1(f"Photo: {_absent(item.photo, item.photo_status)}"), align="L")
        pdf.set_xy(left + PHOTO_MM[0] + 5, top)
        pdf.set_font("Helvetica", "B", 10)
        pdf.cell(0, LINE, latin1(f"Rank {c.rank}: {c.subject_id}"), new_x=XPos.LEFT, new_y=YPos.NEXT)
        pdf.set_font("Helvetica", "", 9)
        for line in (f"Watch-list: {c.watch_list}", f"Score ({score_scale(pack.case.search)}): {c.score:.3f}",
                     f"Gallery face: {c.gallery_face_id}", f"Source: {c.source_ref or '-'}"):
            pdf.cell(0, LINE, latin1(line), new_x=XPos.LEFT, new_y=YPos.NEXT)
        pdf.set_xy(left, max(top + wh[1], pdf.get_y()) + 3)


def _decisions(pdf: PackPdf, pack: dc.DisclosurePack) -> None:
    case = pack.case
    pdf.heading(f"Decisions ({len(case.decisions)})")
    for d in case.decisions:
        pdf.room(20)
        outcome = "escalated to a supervisor" if d.outcome is None else d.outcome
        lead = f", lead: rank {d.lead_rank} ({d.lead_subject_id})" if d.lead_rank is not None else ""
        pdf.para(f"{d.stage} decision by {d.actor} ({d.role}), {show_time(d.decided_at)}: {outcome}{lead}",
                 size=10, style="B")
        for label in d.labels:
            pdf.para(f"  rank {label.get('rank')} ({label.get('subject_id', '')}): {label.get('label')} - "
                     f"{label.get('note', '')}", size=9)
        if d.note:
            pdf.para(f"  Note: {d.note}", size=9)
        pdf.ln(1)


def _audit(pdf: PackPdf, pack: dc.DisclosurePack) -> None:
    pdf.heading(f"Audit entries of case {pack.case.id} ({len(pack.audit)})")
    for e in pack.audit:
        pdf.room(4 * SMALL)
        entry: dict[str, Any] = dict(e)
        pdf.para(f"#{entry['seq']}  {show_time(entry['at'])}  {entry['actor']} ({entry['role']})  "
                 f"{entry['action']}  reason: {entry['reason'] or '-'}", size=7.5, style="B", height=SMALL)
        pdf.para(f"details: {json.dumps(entry['details'], sort_keys=True, ensure_ascii=False)}", size=7,
                 height=SMALL)
        pdf.para(f"hash {entry['hash']}  prev {entry['prev_hash']}", size=6.5, height=SMALL)
        pdf.ln(0.8)


def pack_pdf(pack: dc.DisclosurePack) -> bytes:
    """The PDF of ``pack``: drawn once to count its pages, then again with ``page N/total`` in the footers."""
    pages = _draw(pack, None).pages_count
    return bytes(_draw(pack, pages).output())


def _draw(pack: dc.DisclosurePack, total: int | None) -> PackPdf:
    case = pack.case
    pdf = PackPdf(case.id, total)
    pdf.add_page()
    pdf.heading(f"Disclosure pack - case {case.id}", size=16)
    pdf.para(pack.notice, size=10, style="B", border=1)
    pdf.ln(2)
    pdf.fields([("Outcome", case.outcome or case.state),
                ("Lead", f"rank {case.lead_rank} ({case.lead_subject_id})" if case.lead_rank else "none"),
                ("Case created / decided", f"{show_time(case.created_at)} / {show_time(case.decided_at)}"),
                ("Case closed", show_time(case.closed_at) or "open"),
                ("Exported by", f"{pack.exported_by} ({pack.exported_role}), {show_time(pack.exported_at)}"),
                ("Reason for export", pack.reason), ("Export audit entry", f"#{pack.export_seq}")])
    _probe(pdf, pack)
    _search(pdf, pack)
    _candidates(pdf, pack)
    _decisions(pdf, pack)
    _audit(pdf, pack)
    return pdf
