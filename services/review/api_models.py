"""Request and response bodies of the review API (cases and queue rows are :mod:`rfr.review.views` dataclasses)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from rfr.core.review_messages import DecisionEvent
from rfr.review.users import TOKEN_DEFAULT_DAYS, TOKEN_MAX_DAYS, Role
from rfr.review.workflow import Label

REASON = ("Why: the case or crime reference this step serves (recorded in the audit log with who and when).")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ErrorDetail(BaseModel):
    reason: str = Field(description="Machine reason, e.g. unauthorized, role_not_allowed, own_decision, "
                        "wrong_state, case_not_found, labels_incomplete, note_too_short, unavailable.")
    message: str


class ErrorResponse(BaseModel):
    detail: ErrorDetail


class LoginIn(_Body):
    name: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=1024)


class LoginOut(BaseModel):
    token: str = Field(description="Send as `Authorization: Bearer <token>`.")
    token_type: str = "bearer"
    name: str
    role: Role
    expires_in_s: float


class PrincipalOut(BaseModel):
    name: str
    role: Role


class LabelIn(_Body):
    rank: int = Field(ge=1, description="The candidate's rank on the case's list.")
    label: Label
    note: str = Field(max_length=4000, description="Why (at least 3 characters).")


class DecisionIn(_Body):
    """One label per candidate; the outcome follows (one possible_match: lead; none: no_lead; two: refused)."""

    labels: list[LabelIn] = Field(min_length=1, max_length=100)
    note: str = Field(default="", max_length=4000, description="A note on the whole decision (optional).")
    reason: str = Field(min_length=1, max_length=256, description=REASON)


class NoteIn(_Body):
    note: str = Field(max_length=4000, description="Why (at least 3 characters).")
    reason: str = Field(min_length=1, max_length=256, description=REASON)


class UserIn(_Body):
    name: str = Field(min_length=1, max_length=128)
    role: Role
    password: str = Field(min_length=1, max_length=1024, description="At least 8 characters; never stored plain.")
    reason: str = Field(default="", max_length=256)


class TokenIn(_Body):
    name: str = Field(min_length=1, max_length=128, description="The case system the token is for (its principal "
                      "is `token:<name>`).")
    role: Role = Field(default=Role.CASE_SYSTEM, description="Must be case_system: API tokens are for case systems "
                       "only (people log in as themselves); any other role is refused (422).")
    expires_in_days: int = Field(default=TOKEN_DEFAULT_DAYS, ge=1, le=TOKEN_MAX_DAYS,
                                 description="Days until the token is refused.")
    reason: str = Field(default="", max_length=256)


class TokenOut(BaseModel):
    token: str = Field(description="Shown once: only its sha256 is stored.")
    name: str
    role: Role
    expires_at: datetime


class AuditEntryOut(BaseModel):
    """One audit entry, exactly as exported (see rfr.review.audit for how to re-verify its hash offline)."""

    seq: int
    at: str
    actor: str
    role: str
    action: str
    case_id: int | None
    reason: str
    details: dict[str, Any]
    prev_hash: str
    hash: str


class DecisionsOut(BaseModel):
    decisions: list[DecisionEvent]
    next_after: int = Field(description="Pass as `after` for the next page, or to poll for newer decisions "
                            "(unchanged when none was newer).")


class RetentionOut(BaseModel):
    policy: dict[str, Any] = Field(description="retention.* settings in force (days, interval).")
    last_run_at: datetime | None
    next_run_in_s: float | None
    last_report: dict[str, Any] | None
    due: dict[str, Any] | None = Field(default=None, description="What the next pass would purge or expire, "
                                       "by rule (when the store can tell).")
