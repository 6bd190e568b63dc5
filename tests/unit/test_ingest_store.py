"""The submission store: idempotent claims, rejections, outcome updates and the derived status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rfr.core.schemas import OutcomeEvent, OutcomeStatus
from services.ingest.store import Claim, SqliteSubmissionStore, State, SubmissionRecord

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def rec(sid: str = "sub_1", source: str = "kafka:t:0:1", **kw: object) -> SubmissionRecord:
    return SubmissionRecord(submission_id=sid, retailer_id="r1", channel="kafka", source=source, received_at=T0,
                            store_id="s1", camera_id="c1", captured_at=T0 - timedelta(hours=1), **kw)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> SqliteSubmissionStore:
    return SqliteSubmissionStore(tmp_path / "sub" / "ingest.db")


def test_claim_new_then_redelivery_then_duplicate(store: SqliteSubmissionStore) -> None:
    assert store.claim(rec()) == Claim.NEW
    assert store.claim(rec()) == Claim.REDELIVERY  # the same message again
    assert store.claim(rec(source="http:abc:0")) == Claim.DUPLICATE  # the same still from elsewhere
    got = store.get("sub_1")
    assert got is not None and got.source == "kafka:t:0:1" and got.captured_at == T0 - timedelta(hours=1)


def test_rejection_is_recorded_and_a_later_good_copy_wins(store: SqliteSubmissionStore) -> None:
    store.reject(rec(state=State.REJECTED, reason="missing_metadata", detail="missing camera_id"))
    st = store.status("sub_1")
    assert st is not None and st.status == "rejected" and st.record.reason == "missing_metadata"
    assert store.claim(rec(source="kafka:t:0:9")) == Claim.NEW  # fixed metadata: processed
    store.reject(rec(source="kafka:t:0:10", state=State.REJECTED, reason="corrupt"))  # does not undo it
    st = store.status("sub_1")
    assert st is not None and st.status == "received" and st.record.reason is None


def outcome(status: OutcomeStatus, **kw: object) -> OutcomeEvent:
    return OutcomeEvent.make("sub_1", "r1", status, at=T0 + timedelta(minutes=1), **kw)


def test_outcomes_are_idempotent_and_summarised(store: SqliteSubmissionStore) -> None:
    store.claim(rec())
    assert not store.apply_outcome(outcome(OutcomeStatus.RECEIVED))  # ingest's own: skipped
    assert store.apply_outcome(outcome(OutcomeStatus.FACES_FOUND, faces=2))
    assert not store.apply_outcome(outcome(OutcomeStatus.FACES_FOUND, faces=2))  # redelivered
    st = store.status("sub_1")
    assert st is not None and (st.status, st.progress.faces, st.progress.final) == ("faces_found", 2, False)
    assert store.apply_outcome(outcome(OutcomeStatus.NO_CANDIDATE, face_id="sub_1:f0"))
    st = store.status("sub_1")
    assert st is not None and st.status == "faces_found" and st.progress.faces_no_candidate == 1
    assert store.apply_outcome(outcome(OutcomeStatus.NO_CANDIDATE, face_id="sub_1:f1"))
    st = store.status("sub_1")
    assert st is not None and st.status == "no_candidate" and st.progress.final
    assert store.apply_outcome(outcome(OutcomeStatus.PASSED_FOR_REVIEW, face_id="sub_1:f1"))
    st = store.status("sub_1")
    assert st is not None and st.status == "passed_for_review" and st.progress.faces_passed_for_review == 1
    assert st.updated_at == T0 + timedelta(minutes=1)


def test_no_face_and_unknown_submission(store: SqliteSubmissionStore) -> None:
    store.claim(rec())
    store.apply_outcome(outcome(OutcomeStatus.NO_FACE, faces=0))
    st = store.status("sub_1")
    assert st is not None and (st.status, st.progress.faces, st.progress.final) == ("no_face", 0, True)
    assert store.status("sub_unknown") is None


def test_store_survives_reopening(tmp_path: Path) -> None:
    first = SqliteSubmissionStore(tmp_path / "i.db")
    first.claim(rec())
    first.close()
    again = SqliteSubmissionStore(tmp_path / "i.db")
    assert again.claim(rec(source="http:x:0")) == Claim.DUPLICATE


def test_a_failed_face_makes_the_still_final_and_dropped_faces_are_kept(store: SqliteSubmissionStore) -> None:
    store.claim(rec())
    store.apply_outcome(outcome(OutcomeStatus.FACES_FOUND, faces=2, dropped={"over_max_faces": 9}))
    store.apply_outcome(outcome(OutcomeStatus.PASSED_FOR_REVIEW, face_id="sub_1:f0"))
    assert not store.status("sub_1").progress.final  # type: ignore[union-attr]
    store.apply_outcome(outcome(OutcomeStatus.FAILED, face_id="sub_1:f1", detail="retry_exhausted: 5 tries"))
    st = store.status("sub_1")
    assert st is not None and st.progress.final and st.status == "passed_for_review"
    assert (st.progress.faces_failed, st.progress.faces_dropped) == (1, {"over_max_faces": 9})


def test_a_store_written_before_dropped_was_recorded_is_upgraded(tmp_path: Path) -> None:
    import sqlite3

    old = sqlite3.connect(tmp_path / "old.db")
    old.executescript("CREATE TABLE outcomes (event_id TEXT PRIMARY KEY, submission_id TEXT NOT NULL, "
                      "status TEXT NOT NULL, faces INTEGER, face_id TEXT, at TEXT NOT NULL);"
                      "CREATE TABLE submissions (submission_id TEXT PRIMARY KEY, retailer_id TEXT NOT NULL, "
                      "channel TEXT NOT NULL, source TEXT NOT NULL, received_at TEXT NOT NULL, state TEXT NOT NULL, "
                      "reason TEXT, detail TEXT, store_id TEXT, camera_id TEXT, captured_at TEXT, case_ref TEXT, "
                      "width INTEGER, height INTEGER, size_bytes INTEGER);")
    old.close()
    store = SqliteSubmissionStore(tmp_path / "old.db")
    store.claim(rec())
    assert store.apply_outcome(outcome(OutcomeStatus.FACES_FOUND, faces=1, dropped={"too_small": 1}))
    st = store.status("sub_1")
    assert st is not None and st.progress.faces_dropped == {"too_small": 1}
    assert (st.record.decode_scale, st.record.decode_warnings) == (None, None)  # the new columns, empty
