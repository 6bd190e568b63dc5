"""The disclosure pack of a decided case: the evidence file that goes to prosecutors, gathered for the pages that
print it (HTML) or write it (PDF).

A pack holds the case as a supervisor or auditor sees it (every decision), the probe crop and the still (with the
face box), every candidate with the enrolled photo they were found by, each decision (who, when, stage, labels,
notes), the search (watch-lists, threshold, model, times, trigger), every audit entry naming the case, and
:data:`NOTICE`. Gathering it is itself an ``export`` audit entry (with the case id, the format and the reason given),
written in the transaction that reads the case and before any image is read, so no pack leaves unrecorded; the
entry is part of the pack's audit trail.

Who may export: supervisors and auditors (:data:`DISCLOSURE_ROLES`). The reviewers who decided the case may not: the
pack is handed over by the people who oversee the decisions, not by those who made them (separation of duties), and
a reviewer who needs one asks their supervisor. Only final cases (``lead`` / ``no_lead``) have a pack.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from datetime import datetime

from PIL import Image, UnidentifiedImageError

from rfr.core.blobstore import BlobCorrupt, BlobNotFound, BlobStore
from rfr.review import workflow as wf
from rfr.review.audit_search import case_entries
from rfr.review.store import ReviewStore
from rfr.review.views import CandidateView, CaseView

logger = logging.getLogger(__name__)

DISCLOSURE_ROLES = frozenset({"supervisor", "auditor"})
FORMATS = ("html", "pdf")
MIN_REASON = 3
"""Fewest characters (trimmed) of the reason given for an export."""
FINAL_STATES = frozenset({wf.CaseState.LEAD.value, wf.CaseState.NO_LEAD.value})
NOTICE = ("A candidate list is never an identification. The candidates in this pack are possible candidates that a "
          "face search put forward for trained human review; a lead is a line of enquiry confirmed by trained "
          "reviewers, not proof of who the person in the probe is.")


@dataclass(frozen=True)
class PackImage:
    """Image bytes as stored, with their size in pixels once EXIF-oriented (None when they do not decode)."""

    data: bytes
    size: tuple[int, int] | None


@dataclass(frozen=True)
class PackCandidate:
    """A candidate with its enrolled photo; ``photo_status`` says why there is none (``erased``, ``not kept``,
    ``missing from the blob store``, ...)."""

    candidate: CandidateView
    photo: PackImage | None
    photo_status: str


@dataclass(frozen=True)
class DisclosurePack:
    """Everything one pack shows. ``export_seq``: the audit entry recording this export (in ``audit``)."""

    case: CaseView
    crop: PackImage | None
    crop_status: str
    still: PackImage | None
    still_status: str
    candidates: list[PackCandidate]
    audit: list[dict[str, object]]
    exported_by: str
    exported_role: str
    exported_at: datetime
    reason: str
    format: str
    export_seq: int
    notice: str = NOTICE


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of encoded image bytes after EXIF orientation, read from the header; None when Pillow
    cannot read them."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            orientation = img.getexif().get(0x0112, 1)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _check_reason(reason: str) -> str:
    text = reason.strip()
    if len(text) < MIN_REASON:
        raise wf.DecisionRefused("reason_required", f"give the reason for this export (the case or crime reference, "
                                 f"who asked for it), at least {MIN_REASON} characters")
    return text


def record_export(store: ReviewStore, case_id: int, viewer: wf.Actor, reason: str, fmt: str) -> tuple[CaseView, int]:
    """Read the case as ``viewer`` and audit the export (``export``, with the case id, format and reason) in one
    transaction; returns the case and the entry's seq. Raises NotPermitted (role), DecisionRefused
    (``reason_required``; ``ValueError`` for an unknown format), CaseNotFound, WrongState (not final)."""
    wf.require_role(viewer, DISCLOSURE_ROLES, "export a disclosure pack")
    why = _check_reason(reason)
    if fmt not in FORMATS:
        raise ValueError(f"unknown disclosure format {fmt!r} (one of {', '.join(FORMATS)})")
    with store.engine.begin() as conn:
        view = store.read_case(conn, case_id, viewer)
        if view.state not in FINAL_STATES:
            raise wf.WrongState(case_id, view.state, "a disclosure pack (only lead and no_lead cases have one)")
        seq = store.audit.append(conn, viewer.name, str(viewer.role), "export", reason=why, case_id=case_id, details={
            "what": "disclosure_pack", "format": fmt, "state": view.state, "outcome": view.outcome,
            "candidates": len(view.candidates), "decisions": len(view.decisions)})
    logger.info("disclosure pack of case %s exported as %s (audit entry %s)", case_id, fmt, seq)
    return view, seq


def _blob(blobs: BlobStore, ref: str | None, absent: str) -> tuple[PackImage | None, str]:
    if ref is None:
        return None, absent
    try:
        data = blobs.get(ref)
    except (BlobNotFound, ValueError):
        return None, "missing from the blob store"
    except BlobCorrupt:
        return None, "corrupt in the blob store (does not match its reference)"
    except OSError as exc:
        logger.warning("disclosure: blob store unreadable: %s", exc)
        return None, "the blob store could not be read"
    return PackImage(data, image_size(data)), "kept"


def _photo_absent(candidate: CandidateView) -> str:
    return "not kept, or erased from the gallery" if candidate.photo_ref is None else ""


def gather(store: ReviewStore, blobs: BlobStore, case_id: int, viewer: wf.Actor, reason: str,
           fmt: str, *, photos: BlobStore | None = None) -> DisclosurePack:
    """The pack of a final case for ``viewer`` (a supervisor or auditor), audited first (:func:`record_export`;
    its refusals); images that are gone are named as such in the pack, not refused. ``blobs``: the stills;
    ``photos``: the enrolled gallery photos (default: ``blobs``)."""
    view, seq = record_export(store, case_id, viewer, reason, fmt)
    crop_bytes = store.probe_crop(case_id)
    crop = None if crop_bytes is None else PackImage(crop_bytes, image_size(crop_bytes))
    crop_status = "kept" if crop is not None else "purged by retention" if view.probe.purged_at else "not kept"
    still_absent = "purged by retention" if view.probe.purged_at else "not kept"
    still, still_status = _blob(blobs, store.probe_still_ref(case_id), still_absent)
    candidates = []
    for cand in view.candidates:
        photo, status = _blob(blobs if photos is None else photos, cand.photo_ref, _photo_absent(cand))
        candidates.append(PackCandidate(cand, photo, status))
    return DisclosurePack(
        case=view, crop=crop, crop_status=crop_status, still=still, still_status=still_status,
        candidates=candidates, audit=list(case_entries(store.engine, case_id)), exported_by=viewer.name,
        exported_role=str(viewer.role), exported_at=store.clock(), reason=reason.strip(), format=fmt,
        export_seq=seq)
