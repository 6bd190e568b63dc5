"""Bounds on what clients and people send to the review API and pages, checked before anything reaches the store.

* whole numbers (ids, offsets, cursors): ASCII digits only, ``0 <= x <= MAX_INT`` (2^53 - 1: exact in JSON and
  well inside every database's 64-bit integer; ``int('²')`` and ``10**20`` are refused, not a 500);
* times: converted to UTC, years :data:`MIN_YEAR` to :data:`MAX_YEAR` (``0001-01-01T00:00+01:00`` is refused: it
  has no UTC time a database can store);
* text: a reason (the case or crime reference) at most :data:`MAX_REASON` characters, a note :data:`MAX_NOTE`, a
  decision at most :data:`MAX_LABELS` labels: the limits of the API's bodies (:mod:`services.review.api_models`).

The API answers a value out of bounds with 422 (its validation error); the pages with their 400 or 422 page.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Path
from pydantic import AfterValidator, AwareDatetime

MAX_INT = 2**53 - 1
MIN_YEAR = 1970
MAX_YEAR = 9999
MAX_REASON = 256
MAX_NOTE = 4000
MAX_LABELS = 100
MAX_NAME = 256
"""Longest gallery face id (or other name) in an address."""


def utc_time(value: datetime) -> datetime:
    """``value`` (timezone-aware) in UTC. Raises ``ValueError`` when its UTC year is not within
    :data:`MIN_YEAR`..:data:`MAX_YEAR` (or has none)."""
    try:
        out = value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError(f"a time between {MIN_YEAR} and {MAX_YEAR} (UTC)") from exc
    if not MIN_YEAR <= out.year <= MAX_YEAR:
        raise ValueError(f"a time between {MIN_YEAR} and {MAX_YEAR} (UTC)")
    return out


def whole_number(text: str) -> int | None:
    """``text`` (stripped) as a whole number ``0..MAX_INT``: ASCII digits only; None when it is not one."""
    text = text.strip()
    if not text or not text.isascii() or not text.isdigit() or len(text) > len(str(MAX_INT)):
        return None
    value = int(text)
    return value if value <= MAX_INT else None


UtcTime = Annotated[AwareDatetime, AfterValidator(utc_time)]
"""An API time: with a UTC offset, converted to UTC, 1970..9999."""
CaseId = Annotated[int, Path(ge=1, le=MAX_INT, description="The case id")]
