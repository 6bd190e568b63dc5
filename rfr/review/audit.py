"""The review audit log: append-only, hash-chained, with HMAC-signed head and checkpoints.

Every search, case view, decision, export, gallery erasure, purge, login and policy change is one entry (EU AI Act
Art 12(3), UK DPA 2018 s.62: who, when, what, and why). Entries live in ``audit_entries``:

``seq`` (1, 2, 3, ... without gaps), ``at`` (UTC), ``actor``, ``role``, ``action`` (:class:`AuditAction`),
``case_id`` (or null), ``reason`` (the case or crime reference, or why), ``details`` (a JSON object),
``prev_hash`` (the previous entry's ``hash``; 64 zeros for entry 1) and ``hash``.

``hash`` is ``sha256`` (hex) of the canonical JSON (:func:`canonical_json`: keys sorted, no spaces, ASCII) of the
object of the nine other fields, with ``at`` written as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (:func:`canonical_time`)
and ``details`` as the JSON object. So editing an entry breaks its hash, deleting one leaves a gap, and re-linking
the chain needs every later hash rewritten. Appends are serialised (SQLite: the engine's ``BEGIN IMMEDIATE``;
PostgreSQL: ``SELECT ... FOR UPDATE`` of the single ``audit_head`` row).

The head (``audit_head``: entry count, last hash, time) is signed on every append, and a checkpoint
(``audit_checkpoints``: id 1, 2, ..., entry count, head hash, time) every ``checkpoint_every`` entries and on
:meth:`AuditLog.checkpoint`; signatures are HMAC-SHA256 with a key derived from the service secret, so deleting
the tail, or rewriting the chain after an entry, is detected too: :meth:`AuditLog.verify`. Wiping the whole log
(or resetting its head to the unsigned genesis), even if the service then carries on from a fresh entry 1, is
detected against the review store's own records, each written with its entry (searches, cases, users, tokens).

Export format (:meth:`AuditLog.export`, ``rfr audit export``, ``GET /v1/audit/export``): one JSON object per line,
in ``seq`` order, with exactly the fields above (``details`` as an object, ``at`` as the canonical string). An
auditor re-verifies an export offline, without the secret::

    prev = "0" * 64
    for line in open("audit.jsonl"):
        e = json.loads(line)
        body = {k: v for k, v in e.items() if k != "hash"}
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        assert e["prev_hash"] == prev and hashlib.sha256(text.encode()).hexdigest() == e["hash"]
        prev = e["hash"]

(an export that does not start at entry 1 starts from its first entry's ``prev_hash``). Never put a password or a
token in an entry.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Connection,
    Engine,
    Index,
    Integer,
    Row,
    Select,
    String,
    Table,
    Text,
    func,
    insert,
    inspect,
    select,
    table,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from rfr.review.audit_chain import (
    AUDITED_RECORDS,
    GENESIS_HASH,
    HASHED_FIELDS,
    HEAD_LABEL,
    MAX_PROBLEMS,
    ChainScan,
    Claim,
    VerifyReport,
    canonical_json,
    canonical_time,
    checkpoint_text,
    derive_key,
    entry_hash,
    head_text,
    record_problems,
    row_entry,
)
from rfr.review.tables import ID, UtcDateTime, metadata

logger = logging.getLogger(__name__)

EXPORT_BATCH = 1000




class AuditAction(StrEnum):
    SEARCH = "search"
    CASE_CREATED = "case_created"
    CASE_VIEW = "case_view"
    DECISION = "decision"
    VERIFICATION = "verification"
    ESCALATION = "escalation"
    RESOLUTION = "resolution"
    CASE_CLOSED = "case_closed"
    CASE_EXPIRED = "case_expired"
    DECISION_PUBLISHED = "decision_published"
    EXPORT = "export"
    GALLERY_ENROLMENT = "gallery_enrolment"
    GALLERY_ERASURE = "gallery_erasure"
    PURGE = "purge"
    RETENTION_RUN = "retention_run"
    LOGIN = "login"
    LOGIN_FAILED = "login_failed"
    USER_CREATED = "user_created"
    USER_CHANGED = "user_changed"
    TOKEN_CREATED = "token_created"
    TOKEN_REVOKED = "token_revoked"
    POLICY_CHANGE = "policy_change"
    AUDIT_VERIFY = "audit_verify"
    PHOTO_VIEW = "photo_view"
    CLUSTER_REPORTED = "cluster_reported"
    CLUSTER_VIEW = "cluster_view"
    CLUSTER_CONFIRMED = "cluster_confirmed"
    CLUSTER_DISMISSED = "cluster_dismissed"
    CLUSTER_SPLIT = "cluster_split"
    CLUSTER_RE_SEARCH = "cluster_re_search"
    CLUSTER_PURGED = "cluster_purged"


audit_entries = Table(
    "audit_entries",
    metadata,
    Column("seq", BigInteger(), primary_key=True, autoincrement=False),
    Column("at", UtcDateTime(), nullable=False),
    Column("actor", String(ID * 2), nullable=False),
    Column("role", String(32), nullable=False),
    Column("action", String(32), nullable=False),
    Column("case_id", Integer(), nullable=True),
    Column("reason", Text(), nullable=False),
    Column("details", Text(), nullable=False, comment="canonical JSON object"),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False, comment="sha256 hex of the canonical JSON of the other fields"),
    Index(None, "at"),
    Index(None, "case_id"),
    Index(None, "actor", "at"),
)

audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("id", Integer(), primary_key=True, autoincrement=False, comment="1, 2, 3, ... without gaps"),
    Column("at", UtcDateTime(), nullable=False),
    Column("entry_count", BigInteger(), nullable=False),
    Column("head_hash", String(64), nullable=False),
    Column("signature", String(64), nullable=False, comment="HMAC-SHA256 hex, see rfr.review.audit"),
)

audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer(), primary_key=True, autoincrement=False),
    Column("at", UtcDateTime(), nullable=False),
    Column("entry_count", BigInteger(), nullable=False),
    Column("head_hash", String(64), nullable=False),
    Column("signature", String(64), nullable=False, comment="HMAC-SHA256 hex; empty for the unsigned genesis"),
    CheckConstraint("id = 1", name="single_row"),
)


__all__ = ["GENESIS_HASH", "HASHED_FIELDS", "MAX_PROBLEMS", "AuditAction", "AuditLog", "AuditTampered",
           "VerifyReport", "audit_checkpoints", "audit_entries", "audit_head", "canonical_json", "canonical_time",
           "derive_key", "entry_hash"]


class AuditTampered(RuntimeError):
    """The signed head does not hold: appending would re-sign (and so hide) the tampering; nothing is appended."""


class AuditLog:
    """The audit log of one review database.

    ``engine`` from :func:`rfr.core.db.make_engine` (tables migrated); ``secret`` the service secret (at least 16
    bytes; the signing key is derived from it); ``checkpoint_every`` entries between automatic checkpoints (>= 1);
    ``clock`` returns the timezone-aware time of an entry.
    """

    def __init__(self, engine: Engine, secret: bytes, checkpoint_every: int = 100,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        if len(secret) < 16:
            raise ValueError("the audit secret must be at least 16 bytes")
        if checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, not {checkpoint_every}")
        self._engine = engine
        self._secret = secret
        self._key = derive_key(secret, "audit")
        self._checkpoint_every = checkpoint_every
        self._clock = clock

    @property
    def secret(self) -> bytes:
        """The service secret this log was given (other keys, e.g. of session tokens, derive from it)."""
        return self._secret

    def _sign(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    # --- writing ----------------------------------------------------------------------------------------------
    def append(self, conn: Connection, actor: str, role: str, action: AuditAction | str, reason: str = "",
               case_id: int | None = None, details: Mapping[str, Any] | None = None) -> int:
        """Append one entry inside the caller's transaction ``conn`` (so it commits with the change it records)
        and return its seq. Serialises with every other append (the head row is locked until ``conn`` commits).
        ``action`` must be an :class:`AuditAction` (ValueError otherwise); ``actor`` non-empty; ``details`` a
        JSON-serialisable mapping (datetimes become canonical strings). Raises :class:`AuditTampered` when the
        signed head does not hold (fail closed: the caller's change must not commit unaudited)."""
        action = AuditAction(action)
        if not actor:
            raise ValueError("an audit entry needs an actor")
        details_text = canonical_json(dict(details or {}))
        head = self._lock_head(conn)
        if not self._head_holds(head):
            raise AuditTampered("the audit head's signature does not hold (tampered with, or another secret): "
                                "refusing to append; run `rfr audit verify`")
        at = self._clock()
        entry: dict[str, Any] = {"seq": int(head.entry_count) + 1, "at": canonical_time(at), "actor": actor,
                                 "role": str(role), "action": str(action), "case_id": case_id,
                                 "reason": reason, "details": json.loads(details_text), "prev_hash": head.head_hash}
        digest = entry_hash(entry)
        conn.execute(insert(audit_entries).values(
            seq=entry["seq"], at=at, actor=actor, role=entry["role"], action=entry["action"], case_id=case_id,
            reason=reason, details=details_text, prev_hash=head.head_hash, hash=digest))
        conn.execute(update(audit_head).where(audit_head.c.id == 1).values(
            at=at, entry_count=entry["seq"], head_hash=digest,
            signature=self._sign(head_text(entry["seq"], digest, at))))
        if entry["seq"] % self._checkpoint_every == 0:
            self._write_checkpoint(conn, entry["seq"], digest, at)
        return int(entry["seq"])

    def append_now(self, actor: str, role: str, action: AuditAction | str, reason: str = "",
                   case_id: int | None = None, details: Mapping[str, Any] | None = None) -> int:
        """:meth:`append` in a transaction of its own; returns the seq."""
        with self._engine.begin() as conn:
            return self.append(conn, actor, role, action, reason=reason, case_id=case_id, details=details)

    def checkpoint(self) -> int | None:
        """Write a signed checkpoint of the current head; returns its id, or None when the log is empty or the
        latest checkpoint already covers every entry."""
        with self._engine.begin() as conn:
            head = self._lock_head(conn)
            latest = conn.execute(select(audit_checkpoints.c.entry_count)
                                  .order_by(audit_checkpoints.c.id.desc()).limit(1)).scalar()
            if head.entry_count in (0, latest):
                return None
            return self._write_checkpoint(conn, int(head.entry_count), head.head_hash, self._clock())

    def _write_checkpoint(self, conn: Connection, count: int, head_hash: str, at: datetime) -> int:
        last = conn.execute(select(audit_checkpoints.c.id).order_by(audit_checkpoints.c.id.desc()).limit(1)).scalar()
        cp_id = int(last or 0) + 1
        conn.execute(insert(audit_checkpoints).values(
            id=cp_id, at=at, entry_count=count, head_hash=head_hash,
            signature=self._sign(checkpoint_text(cp_id, count, head_hash, at))))
        logger.info("audit checkpoint %s: %s entries", cp_id, count)
        return cp_id

    def _head_holds(self, head: Row[Any]) -> bool:
        """The head's signature holds (or it is the unsigned genesis of an empty log)."""
        if head.entry_count == 0 and head.head_hash == GENESIS_HASH and head.signature == "":
            return True
        text = head_text(int(head.entry_count), head.head_hash, head.at)
        return hmac.compare_digest(self._sign(text), head.signature)

    def _lock_head(self, conn: Connection) -> Row[Any]:
        """The head row, locked for this transaction (created as the unsigned genesis on first use)."""
        query = select(audit_head).where(audit_head.c.id == 1).with_for_update()
        row = conn.execute(query).first()
        if row is None:
            values = {"id": 1, "at": self._clock(), "entry_count": 0, "head_hash": GENESIS_HASH, "signature": ""}
            dialect = conn.dialect.name
            if dialect == "postgresql":
                conn.execute(postgresql.insert(audit_head).values(**values).on_conflict_do_nothing())
            elif dialect == "sqlite":
                conn.execute(sqlite.insert(audit_head).values(**values).on_conflict_do_nothing())
            else:
                conn.execute(insert(audit_head).values(**values))
            row = conn.execute(query).one()
        return row

    # --- reading ----------------------------------------------------------------------------------------------
    @contextmanager
    def _snapshot(self) -> Iterator[Connection]:
        """One consistent read of the whole log (PostgreSQL: REPEATABLE READ; SQLite: one transaction)."""
        with self._engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn

    def verify(self) -> VerifyReport:
        """Check the whole log: each entry's hash and link, no gaps, the head's and checkpoints' signatures, and
        their counts and hashes against the entries; and the log against the review store's records written with
        an entry each (searches, cases, users, API tokens: a log wiped or reset to its genesis, or restarted after
        a wipe, while they remain, names entry 1; :func:`rfr.review.audit_chain.record_problems`). Problems name
        the entry (or checkpoint); see the module doc."""
        with self._snapshot() as conn:
            head = conn.execute(select(audit_head).where(audit_head.c.id == 1)).first()
            checkpoints = conn.execute(select(audit_checkpoints).order_by(audit_checkpoints.c.id)).all()
            claims, problems = self._claims(head, checkpoints)
            scan = ChainScan({c.count for c in claims})
            rows = conn.execute(select(audit_entries).order_by(audit_entries.c.seq),
                                execution_options={"yield_per": EXPORT_BATCH})
            for row in rows:
                scan.feed(row)
            records = _audited_records(conn)
        signed_head = next((c for c in claims if c.label == HEAD_LABEL), None)
        if head is None and scan.count:
            problems.append("audit head: missing (deleted)")
        elif signed_head is not None and signed_head.count < scan.last_seq:
            problems.append(f"entry {signed_head.count + 1}: not covered by the signed head (added outside the log)")
        scan.check_claims(claims)
        genesis = head is None or (int(head.entry_count) == 0 and head.head_hash == GENESIS_HASH)
        found = problems + record_problems(records, scan, genesis) + scan.problems
        if len(found) > MAX_PROBLEMS:
            found = [*found[:MAX_PROBLEMS], f"... and {len(found) - MAX_PROBLEMS} more problem(s)"]
        report = VerifyReport(entries=scan.count, checkpoints=len(checkpoints), problems=found)
        logger.info("audit verify: %s entries, %s checkpoints, %s problem(s)", report.entries, report.checkpoints,
                    len(report.problems))
        return report

    def _claims(self, head: Row[Any] | None, checkpoints: Sequence[Row[Any]]) -> tuple[list[Claim], list[str]]:
        """The signed counts of the head and the checkpoints whose signatures hold, and the problems found."""
        claims: list[Claim] = []
        problems: list[str] = []
        if head is not None:
            if self._head_holds(head):
                claims.append(Claim(HEAD_LABEL, int(head.entry_count), head.head_hash))
            else:
                problems.append("audit head: bad signature (forged or edited)")
        for expected, cp in enumerate(checkpoints, start=1):
            if cp.id != expected:
                problems.append(f"checkpoint {expected}: missing (deleted)")
                break
        for cp in checkpoints:
            text = checkpoint_text(int(cp.id), int(cp.entry_count), cp.head_hash, cp.at)
            if hmac.compare_digest(self._sign(text), cp.signature):
                claims.append(Claim(f"checkpoint {cp.id} (signed)", int(cp.entry_count), cp.head_hash))
            else:
                problems.append(f"checkpoint {cp.id}: bad signature (forged or edited)")
        return claims, problems

    def export(self, since: datetime | None = None, until: datetime | None = None) -> Iterator[dict[str, Any]]:
        """Entries with ``since <= at < until`` (either bound optional, timezone-aware) in seq order, as export
        dicts (module doc), read in batches of short transactions."""
        after = 0
        while True:
            query = select(audit_entries).where(audit_entries.c.seq > after)
            query = _time_bounds(query, since, until).order_by(audit_entries.c.seq).limit(EXPORT_BATCH)
            with self._engine.connect() as conn:
                rows = conn.execute(query).all()
            for row in rows:
                yield row_entry(row)
            if len(rows) < EXPORT_BATCH:
                return
            after = int(rows[-1].seq)

    def query(self, *, actor: str | None = None, action: AuditAction | str | None = None,
              case_id: int | None = None, since: datetime | None = None, until: datetime | None = None,
              limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """Entries matching every filter given, newest first, as export dicts (``limit`` at most 1000)."""
        query = select(audit_entries)
        if actor is not None:
            query = query.where(audit_entries.c.actor == actor)
        if action is not None:
            query = query.where(audit_entries.c.action == str(AuditAction(action)))
        if case_id is not None:
            query = query.where(audit_entries.c.case_id == case_id)
        query = _time_bounds(query, since, until).order_by(audit_entries.c.seq.desc())
        query = query.limit(max(0, min(limit, EXPORT_BATCH))).offset(max(0, offset))
        with self._engine.connect() as conn:
            return [row_entry(row) for row in conn.execute(query)]


def _audited_records(conn: Connection) -> dict[str, int]:
    """Rows of each table of :data:`AUDITED_RECORDS` present in the database (an absent table is left out)."""
    present = set(inspect(conn).get_table_names())
    return {name: int(conn.execute(select(func.count()).select_from(table(name))).scalar_one())
            for name in AUDITED_RECORDS if name in present}


def _time_bounds(query: Select[Any], since: datetime | None, until: datetime | None) -> Select[Any]:
    if since is not None:
        query = query.where(audit_entries.c.at >= since)
    if until is not None:
        query = query.where(audit_entries.c.at < until)
    return query
