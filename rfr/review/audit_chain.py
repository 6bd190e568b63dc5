"""The audit chain's canonical forms and its verification scan (:mod:`rfr.review.audit` has the log itself).

An entry's ``hash`` is sha256 (hex) of the canonical JSON (:func:`canonical_json`) of its :data:`HASHED_FIELDS`;
signed statements (the head, each checkpoint) are HMAC-SHA256 of a fixed text under a key derived from the service
secret (:func:`derive_key`). :class:`ChainScan` walks the entries in ``seq`` order and names every entry that is
missing, re-linked or edited, and every signed count the log no longer holds.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Row

GENESIS_HASH = "0" * 64
"""``prev_hash`` of entry 1."""
HASHED_FIELDS = ("seq", "at", "actor", "role", "action", "case_id", "reason", "details", "prev_hash")
"""The fields an entry's ``hash`` covers (every field but ``hash``)."""
HEAD_LABEL = "the signed head"
MAX_PROBLEMS = 1000
"""At most this many problems are listed by :meth:`AuditLog.verify`, then a count of the rest."""
AUDITED_RECORDS = {"searches": "search", "cases": "case_created", "users": "user_created",
                   "api_tokens": "token_created", "clusters": "cluster_reported"}
"""Tables of the review store whose every row is written with an audit entry (this action) in its transaction."""
COUNTED_RECORDS = frozenset({"searches", "cases", "clusters"})
"""Of those, the tables whose rows are never deleted: each row's entry is still in the log."""


# --- canonical forms ----------------------------------------------------------------------------------------
def canonical_time(at: datetime) -> str:
    """``at`` in UTC as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``; a naive datetime is refused (ValueError)."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"naive datetime {at!r}: audit times are timezone-aware")
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return canonical_time(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return sorted(value) if isinstance(value, (set, frozenset)) else list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable in an audit entry")


def canonical_json(value: object) -> str:
    """Keys sorted, compact, ASCII-only JSON; datetimes as :func:`canonical_time`; NaN refused (ValueError)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False,
                      default=_json_default)


def entry_hash(entry: Mapping[str, Any]) -> str:
    """sha256 hex of the canonical JSON of an entry's :data:`HASHED_FIELDS` (``details`` as an object)."""
    body = {name: entry[name] for name in HASHED_FIELDS}
    return hashlib.sha256(canonical_json(body).encode("ascii")).hexdigest()


def derive_key(secret: bytes, purpose: str) -> bytes:
    """A key for one purpose (``audit``, ``session``) derived from the service secret (HMAC-SHA256)."""
    return hmac.new(secret, f"rfr-key/v1:{purpose}".encode(), hashlib.sha256).digest()


def head_text(entry_count: int, head_hash: str, at: datetime) -> str:
    return f"rfr-audit-head/v1 {entry_count} {head_hash} {canonical_time(at)}"


def checkpoint_text(cp_id: int, entry_count: int, head_hash: str, at: datetime) -> str:
    return f"rfr-audit-checkpoint/v1 {cp_id} {entry_count} {head_hash} {canonical_time(at)}"


def row_entry(row: Row[Any]) -> dict[str, Any]:
    """An entry row as its export dict (details parsed; raises ValueError when they are not JSON)."""
    return {"seq": row.seq, "at": canonical_time(row.at), "actor": row.actor, "role": row.role,
            "action": row.action, "case_id": row.case_id, "reason": row.reason,
            "details": json.loads(row.details), "prev_hash": row.prev_hash, "hash": row.hash}


# --- verification -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VerifyReport:
    """Result of :meth:`AuditLog.verify`: ``entries`` present, ``checkpoints`` present, and one problem per finding,
    each naming the entry (``"entry 17: hash does not match its content (edited)"``); ``ok`` when there is none."""

    entries: int
    checkpoints: int
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class Claim:
    """A signed statement "the log had ``count`` entries, the last with hash ``head_hash``"."""

    label: str  # "the signed head", "checkpoint 3 (signed)"
    count: int
    head_hash: str


class ChainScan:
    """Walks the entries in seq order: gaps, links, hashes; remembers the hashes at the claimed counts and counts
    the entries by action."""

    def __init__(self, wanted: set[int]) -> None:
        self.wanted = wanted
        self.last_seq = 0
        self.last_hash = GENESIS_HASH
        self.count = 0
        self.hashes: dict[int, str] = {}
        self.actions: Counter[str] = Counter()
        self.problems: list[str] = []

    def feed(self, row: Row[Any]) -> None:
        seq = int(row.seq)
        if seq != self.last_seq + 1:
            self.problems.append(f"entry {self.last_seq + 1}: missing; the log jumps from entry {self.last_seq} "
                                 f"to entry {seq} (deleted)")
        elif row.prev_hash != self.last_hash:
            what = "the genesis hash" if seq == 1 else f"the hash of entry {self.last_seq}"
            self.problems.append(f"entry {seq}: prev_hash does not match {what} (chain broken or re-linked)")
        self._check_content(seq, row)
        if seq in self.wanted:
            self.hashes[seq] = row.hash
        self.last_seq, self.last_hash = seq, row.hash
        self.actions[str(row.action)] += 1
        self.count += 1

    def _check_content(self, seq: int, row: Row[Any]) -> None:
        try:
            entry = row_entry(row)
        except ValueError:
            self.problems.append(f"entry {seq}: details are not valid JSON (edited)")
            return
        if entry_hash(entry) != row.hash:
            self.problems.append(f"entry {seq}: hash does not match its content (edited)")
        elif canonical_json(entry["details"]) != row.details:
            self.problems.append(f"entry {seq}: details are not in canonical form (edited)")

    def check_claims(self, claims: list[Claim]) -> None:
        """Each signed count against the log: a tail deleted, entries added unsigned, a chain rewritten."""
        longest = max(claims, key=lambda c: c.count, default=None)
        if longest is not None and longest.count > self.last_seq:
            ends = f"ends at entry {self.last_seq}" if self.last_seq else "is empty"
            self.problems.append(f"entry {self.last_seq + 1}: missing; {longest.label} counts {longest.count} "
                                 f"entries but the log {ends} (deleted)")
        for claim in claims:
            seen = self.hashes.get(claim.count)
            if claim.count and seen is not None and seen != claim.head_hash:
                self.problems.append(f"entry {claim.count}: hash differs from the one {claim.label} holds "
                                     "(chain rewritten)")


def record_problems(records: Mapping[str, int], scan: ChainScan, genesis_head: bool) -> list[str]:
    """What the review store's own records say about a log wiped (or reset to its genesis) and restarted.

    ``records``: rows of the tables named in :data:`AUDITED_RECORDS` (a table absent from the database left out).
    Every such row is written with its audit entry in one transaction, so rows with an empty log (or with the
    head at the unsigned genesis) mean the log was wiped or reset; and the searches and cases, which are never
    deleted, each have their entry, so more rows than entries mean entries were deleted and the log restarted."""
    held = {name: n for name, n in records.items() if n}
    if not held:
        return []
    what = ", ".join(f"{n} {name}" for name, n in sorted(held.items()))
    if scan.count == 0 or genesis_head:
        state = "is empty" if scan.count == 0 else "has its head at the unsigned genesis"
        return [f"entry 1: missing; the log {state} but the review store holds {what}, each written with an "
                "audit entry (the log was wiped or reset)"]
    problems = []
    for name, action in AUDITED_RECORDS.items():
        if name in COUNTED_RECORDS and held.get(name, 0) > scan.actions[action]:
            problems.append(f"entry 1: the review store holds {held[name]} {name} but the log only "
                            f"{scan.actions[action]} {action!r} entries (entries deleted, the log restarted)")
    return problems


def verify_export(lines: Iterable[str]) -> VerifyReport:
    """Check an export (:meth:`rfr.review.audit.AuditLog.export` JSON lines) without the database or the secret:
    each line parses, ``seq`` follows on without a gap, each ``prev_hash`` is the previous ``hash`` (the first
    line's is taken as given: an export may start after entry 1) and each ``hash`` matches its content. Signatures
    are not checked (they need the secret): `rfr audit verify` on the database does that."""
    problems: list[str] = []
    count, last_seq, last_hash = 0, None, None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            seq, ok = int(entry["seq"]), entry_hash(entry) == entry["hash"]
        except (ValueError, KeyError, TypeError) as exc:
            problems.append(f"line {number}: not an audit entry ({type(exc).__name__}: {exc})")
            continue
        count += 1
        if last_seq is not None and seq != last_seq + 1:
            problems.append(f"entry {last_seq + 1}: missing; the export jumps from entry {last_seq} to entry {seq}")
        elif last_hash is not None and entry["prev_hash"] != last_hash:
            problems.append(f"entry {seq}: prev_hash does not match the hash of entry {last_seq} (chain broken)")
        if not ok:
            problems.append(f"entry {seq}: hash does not match its content (edited)")
        last_seq, last_hash = seq, entry["hash"]
    return VerifyReport(entries=count, checkpoints=0, problems=problems)
