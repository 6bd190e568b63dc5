"""Small helpers of the oversight pages (audit, gallery, retention, disclosure): filter values from query strings,
times typed by people, paging links, and the way times are shown."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode

from services.review.bounds import MAX_YEAR, MIN_YEAR, utc_time, whole_number


class FilterError(ValueError):
    """A filter value people typed that cannot be used; the message names the field."""


def parse_time(field: str, text: str) -> datetime | None:
    """A time typed in a filter: ISO 8601 (``2025-03-01``, ``2025-03-01T12:00`` as a ``datetime-local`` input sends
    it, or with an offset or ``Z``); without an offset it is UTC; returned in UTC, years 1970..9999. Empty: None.
    Raises :class:`FilterError`."""
    text = text.strip()
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise FilterError(f"{field}: {text[:64]!r} is not a time like 2025-03-01T12:00 (UTC)") from exc
    try:
        return utc_time(value.replace(tzinfo=UTC) if value.tzinfo is None else value)
    except ValueError as exc:
        raise FilterError(f"{field}: {text[:64]!r} is not between {MIN_YEAR} and {MAX_YEAR} (UTC)") from exc


def parse_id(field: str, text: str) -> int | None:
    """A positive whole number typed in a filter (ASCII digits, at most 2^53 - 1); empty: None. Raises
    :class:`FilterError`."""
    text = text.strip()
    if not text:
        return None
    value = whole_number(text)
    if value is None or value < 1:
        raise FilterError(f"{field}: {text[:64]!r} is not a positive whole number")
    return value


def parse_offset(text: str) -> int:
    """A page's offset from its query string: 0 when empty. Raises :class:`FilterError` when it is not a whole
    number (ASCII digits, at most 2^53 - 1)."""
    if not text.strip():
        return 0
    value = whole_number(text)
    if value is None:
        raise FilterError(f"offset: {text[:64]!r} is not a whole number")
    return value


def show_time(value: datetime | str | None) -> str:
    """A time as people read it on these pages: ``2025-03-01 12:00:05 UTC`` (empty for None; text unchanged)."""
    if value is None:
        return ""
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            return value
    else:
        when = value
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def input_time(value: datetime | None) -> str:
    """A time as a ``datetime-local`` input shows it (UTC, to the second)."""
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


@dataclass(frozen=True)
class Pager:
    """Where a page of ``limit`` rows from ``offset`` sits among ``total``, and the links to its neighbours (the
    filters in ``params`` kept)."""

    path: str
    params: Mapping[str, str]
    total: int
    limit: int
    offset: int

    @property
    def first(self) -> int:
        return min(self.offset + 1, self.total)

    @property
    def last(self) -> int:
        return min(self.offset + self.limit, self.total)

    def _href(self, offset: int) -> str:
        kept = {k: v for k, v in self.params.items() if v}
        if offset:
            kept["offset"] = str(offset)
        return self.path + ("?" + urlencode(kept) if kept else "")

    @property
    def previous(self) -> str | None:
        return self._href(max(0, self.offset - self.limit)) if self.offset > 0 else None

    @property
    def next(self) -> str | None:
        return self._href(self.offset + self.limit) if self.offset + self.limit < self.total else None
