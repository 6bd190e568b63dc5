"""Searching the audit log for the audit pages: every filter of :meth:`rfr.review.audit.AuditLog.query` plus "the
reason contains" (the case or crime reference), a total for paging, and one entry by its ``seq``.

Reads only; entries come back as the export dicts of :func:`rfr.review.audit_chain.row_entry` (with ``hash`` and
``prev_hash``), newest first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Row, Select, func, select

from rfr.review.audit import AuditAction, audit_entries
from rfr.review.audit_chain import canonical_time, row_entry

MAX_PAGE = 500
"""Most entries one page lists."""
MAX_NUMBER = 2**53 - 1
"""Largest offset or seq looked for (a larger one would overflow the database's integers: nothing is there)."""


@dataclass(frozen=True)
class AuditFilter:
    """Entries matching every field given: ``actor`` exactly, ``action``, ``case_id``, ``since <= at < until``
    (timezone-aware), and ``reason_contains`` anywhere in the reason, case-insensitively."""

    actor: str | None = None
    action: AuditAction | None = None
    case_id: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    reason_contains: str | None = None

    def apply(self, query: Select[Any]) -> Select[Any]:
        e = audit_entries.c
        if self.actor:
            query = query.where(e.actor == self.actor)
        if self.action is not None:
            query = query.where(e.action == self.action.value)
        if self.case_id is not None:
            query = query.where(e.case_id == self.case_id)
        if self.since is not None:
            query = query.where(e.at >= self.since)
        if self.until is not None:
            query = query.where(e.at < self.until)
        if self.reason_contains:
            query = query.where(func.lower(e.reason).contains(self.reason_contains.lower(), autoescape=True))
        return query


@dataclass(frozen=True)
class AuditPage:
    """One page of entries (newest first) and how many match in all."""

    entries: list[dict[str, Any]]
    total: int
    limit: int
    offset: int


def _entry(row: Row[Any]) -> dict[str, Any]:
    """The export dict of a row; details that are not JSON (an edited entry) are shown as their raw text."""
    try:
        return row_entry(row)
    except ValueError:
        out = dict(row._mapping)
        out["at"] = canonical_time(row.at)
        out["details"] = {"unreadable_details": row.details}
        return out


def search(engine: Engine, where: AuditFilter, limit: int = 50, offset: int = 0) -> AuditPage:
    """Entries matching ``where``, newest first, ``limit`` (1..:data:`MAX_PAGE`) from ``offset``."""
    limit, offset = max(1, min(limit, MAX_PAGE)), max(0, min(offset, MAX_NUMBER))
    with engine.connect() as conn:
        total = conn.execute(where.apply(select(func.count()).select_from(audit_entries))).scalar_one()
        rows = conn.execute(where.apply(select(audit_entries)).order_by(audit_entries.c.seq.desc())
                            .limit(limit).offset(offset)).all()
    return AuditPage([_entry(r) for r in rows], int(total), limit, offset)


def entry(engine: Engine, seq: int) -> dict[str, Any] | None:
    """The entry ``seq`` as its export dict; None when there is none."""
    if not 0 <= seq <= MAX_NUMBER:
        return None
    with engine.connect() as conn:
        row = conn.execute(select(audit_entries).where(audit_entries.c.seq == seq)).first()
    return None if row is None else _entry(row)


def case_entries(engine: Engine, case_id: int) -> list[dict[str, Any]]:
    """Every entry naming ``case_id``, oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(select(audit_entries).where(audit_entries.c.case_id == case_id)
                            .order_by(audit_entries.c.seq)).all()
    return [_entry(r) for r in rows]
