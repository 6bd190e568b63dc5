"""Messages of the review side (schema v1 each): gallery changes on ``rfr.gallery.v1`` and final decisions on
``rfr.decisions.v1``. Same rules as :mod:`rfr.core.schemas` (frozen, ``schema_version``, JSON on the wire)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, field_validator

from rfr.core.schemas import Candidate, Message, check_template, utcnow


class GalleryFaceRecord(Message):
    """One photo of a gallery change (schema v1)."""

    schema_version: Literal[1] = 1
    face_id: str = Field(description="The gallery face id (rfr.gallery.base.enrol_face_id).")
    subject_id: str
    photo_ref: str | None = Field(
        default=None, description="Blob-store reference (sha256:<hex>) of the enrolled photo, kept so that "
        "reviewers can see a candidate beside the probe; None when not kept.")
    source_ref: str = ""
    template: bytes | None = Field(
        default=None, description="enrolled: the photo's template, little-endian float32 bytes (the review service "
        "re-searches unsolved probes against new enrolments only).")

    @field_validator("template")
    @classmethod
    def _whole_floats(cls, value: bytes | None) -> bytes | None:
        return None if value is None else check_template(value)


GALLERY_CHANGE_MAX_FACES = 200
"""Most photos in one GalleryChange (512-d templates: ~0.6 MB of JSON, under Kafka's default 1 MB message)."""


class GalleryChange(Message):
    """Photos enrolled on, or erased from, a watch-list (schema v1), on ``rfr.gallery.v1``. Published by
    ``rfr enrol`` and ``rfr gallery delete``; the review service audits it, keeps the photos viewable and
    re-searches unsolved probes against new enrolments."""

    schema_version: Literal[1] = 1
    event_id: str
    action: Literal["enrolled", "erased"]
    watch_list: str
    model_id: str
    at: datetime = Field(default_factory=utcnow)
    actor: str = Field(description="Who made the change (user name, or cli:<os user>).")
    reason: str = Field(default="", description="Why: the authority or reference for the change.")
    faces: list[GalleryFaceRecord] = Field(min_length=1, max_length=GALLERY_CHANGE_MAX_FACES)


DecisionOutcome = Literal["lead", "no_lead"]
NEVER_AN_IDENTIFICATION = "a candidate list is never an identification."
NOTICES: dict[tuple[str, bool], str] = {
    ("lead", True): "A lead for investigation, confirmed by two trained reviewers deciding independently; "
                    + NEVER_AN_IDENTIFICATION,
    ("lead", False): "A lead for investigation, decided by one trained reviewer without a second person's "
                     "confirmation; " + NEVER_AN_IDENTIFICATION,
    ("no_lead", True): "No lead: trained reviewers found none of the candidates to be a possible match; "
                       + NEVER_AN_IDENTIFICATION,
    ("no_lead", False): "No lead: a trained reviewer found none of the candidates to be a possible match; "
                        + NEVER_AN_IDENTIFICATION,
}


class ReviewerDecision(Message):
    """One reviewer's decision on a case, as published (schema v1)."""

    schema_version: Literal[1] = 1
    reviewer: str
    role: str
    stage: Literal["first", "verification", "supervisor"]
    outcome: DecisionOutcome
    lead_subject_id: str | None = None
    decided_at: datetime


class DecisionEvent(Message):
    """The final decision on one review case (schema v1), on ``rfr.decisions.v1`` for case systems. A lead is a
    line of enquiry confirmed by trained reviewers (two, unless two-person verification is off); a candidate list is
    never an identification."""

    schema_version: Literal[1] = 1
    event_id: str = Field(description="case-<case_id>:final: one final decision per case.")
    case_id: int
    case_ref: str | None = None
    face_id: str
    submission_id: str
    retailer_id: str
    outcome: DecisionOutcome
    lead: Candidate | None = Field(default=None, description="lead: the candidate decided on.")
    decisions: list[ReviewerDecision]
    two_person: bool
    decided_at: datetime
    searched_at: datetime
    threshold: float
    model_id: str
    score_norm: str = Field(default="none", description="The scale of `threshold` and of the lead's `score`, as the "
                            "search's CandidateList recorded it: none or cohort (cosines), hubness (CSLS scores).")
    notice: str = Field(default=NOTICES[("lead", True)], description="What the decision is and is not, in words: "
                        "decision_notice(outcome, two_person).")


def decision_notice(outcome: DecisionOutcome, two_person: bool) -> str:
    """The plain-words notice a DecisionEvent carries for its outcome and verification."""
    return NOTICES[(outcome, two_person)]
