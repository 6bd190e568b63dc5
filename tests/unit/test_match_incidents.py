"""The match stage's multi-still incidents and investigative searches, with the in-memory gallery, a SQLite
pending-incident store and a fake producer: one list per incident, deterministic ids, crash safety, late faces."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from confluent_kafka import Message
from pydantic import ValidationError
from sqlalchemy import func, insert, select
from sqlalchemy.exc import OperationalError
from support.events import probe_fields
from support.kafka import FakeMsg, FakeProducer

from rfr.core import db
from rfr.core.kafka import DeliveryTracker, Output
from rfr.core.schemas import (
    CandidateList,
    EmbeddingEvent,
    FaceQuality,
    IncidentStillReport,
    OutcomeEvent,
    StillStatus,
    SubmissionMeta,
    decode,
    template_bytes,
)
from rfr.core.settings import MatchSettings
from rfr.core.stream import DependencyUnavailable, PoisonMessage
from rfr.core.topics import Topics
from rfr.embedding.incidents import Incident, fuse_templates, incident_event_id
from rfr.gallery.base import GalleryFace
from rfr.gallery.memory import InMemoryGallery
from services.match.handler import MatchHandler
from services.match.incident_worker import IncidentWorker
from services.match.incidents import PURGE_BATCH, IncidentStore, OutboxRow, incidents, items, outbox

MODEL = "facenet-test"
RETENTION_S = MatchSettings().closed_incident_retention_s
DIM = 16
T0 = datetime(2026, 1, 2, 10, 0, tzinfo=UTC)
TOPICS = Topics("t")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def unit(seed: int, base: int | None = None, noise: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = np.zeros(DIM, np.float32) if base is not None else rng.normal(size=DIM).astype(np.float32)
    if base is not None:
        v[base] = 1.0
        v += rng.normal(size=DIM).astype(np.float32) * noise
    return v / np.linalg.norm(v)


def meta(incident: str | None = "inc-1", stills: int | None = 3) -> SubmissionMeta:
    return SubmissionMeta(retailer_id="r1", store_id="s1", camera_id="c1", captured_at=T0, incident_id=incident,
                          incident_stills=stills if incident else None)


def embedding(sub: str, vector: np.ndarray, index: int = 0, m: SubmissionMeta | None = None,
              gated: str | None = None) -> bytes:
    return EmbeddingEvent(
        event_id=f"{sub}:f{index}", face_id=f"{sub}:f{index}", submission_id=sub, meta=m or meta(), received_at=T0,
        quality=FaceQuality(face_px=40, score=0.9, sharpness=50, eye_distance_px=15, pose_ok=True),
        model_id=MODEL, weights_sha256="ab", template=template_bytes(vector), gated_reason=gated,
        **probe_fields(f"sha256:{sub}")).to_bytes()


def report(sub: str, faces: int, m: SubmissionMeta | None = None) -> bytes:
    return IncidentStillReport(event_id=f"{sub}:incident", submission_id=sub, meta=m or meta(), received_at=T0,
                               still_ref=f"sha256:{sub}", face_ids=[f"{sub}:f{i}" for i in range(faces)]).to_bytes()


def msgs(*items: tuple[str, bytes]) -> Sequence[Message]:
    return cast(Sequence[Message], [FakeMsg(value, i, topic=topic) for i, (topic, value) in enumerate(items)])


def emb(value: bytes) -> tuple[str, bytes]:
    return TOPICS.embeddings, value


def rep(value: bytes) -> tuple[str, bytes]:
    return TOPICS.incidents, value


class Rig:
    """A handler, its store and worker on one SQLite file; ``restart`` opens all three again (a crash)."""

    def __init__(self, path: Path, gallery: InMemoryGallery, timeout_s: float = 120.0) -> None:
        self.path, self.gallery, self.timeout_s = path, gallery, timeout_s
        self.clock = Clock()
        self.producer = FakeProducer()
        self.restart()

    def restart(self) -> None:
        self.store = IncidentStore(db.make_engine(db.sqlite_url(self.path)), clock=self.clock)
        cfg = MatchSettings(threshold=0.6, top_k=3, watch_lists=["custody"])
        self.handler = MatchHandler(self.gallery, cfg, TOPICS, clock=self.clock, incidents=self.store)
        self.worker = IncidentWorker(self.store, self.handler.build_incident,
                                     DeliveryTracker(cast(Any, self.producer)), TOPICS, self.timeout_s, 0.1)

    def handle(self, *items: tuple[str, bytes]) -> list[Any]:
        return self.handler.handle_batch(msgs(*items))

    def lists(self) -> list[CandidateList]:
        return [decode(CandidateList, p.value) for p in self.producer.produced if p.topic == TOPICS.matches]

    def outcomes(self) -> list[OutcomeEvent]:
        return [decode(OutcomeEvent, p.value) for p in self.producer.produced if p.topic == TOPICS.outcomes]


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    g = InMemoryGallery(MODEL)
    g.add([GalleryFace("a1", "alice", "custody", unit(0, base=0), "alice/1.jpg"),
           GalleryFace("b1", "bob", "custody", unit(0, base=1), "bob/1.jpg")])
    return Rig(tmp_path / "incidents.db", g)


def test_three_stills_give_one_list_naming_them(rig: Rig) -> None:
    stills = {f"s{i}": unit(i, base=0, noise=0.25) for i in range(3)}
    results = rig.handle(*(emb(embedding(s, v)) for s, v in stills.items()), rep(report("s0", 1)), rep(report("s1", 1)))
    assert results == [[], [], [], [], []]  # nothing is searched per still
    assert rig.worker.run_once() == 0  # s2 has not reported yet
    rig.handle(rep(report("s2", 1)))
    assert rig.worker.run_once() == 1
    [cl] = rig.lists()
    assert cl.schema_version == 4 and cl.incident_id == "inc-1" and cl.stills_expected == 3
    assert cl.event_id == cl.face_id == incident_event_id("r1", "inc-1")
    assert [(s.submission_id, s.status) for s in cl.stills] == [(s, StillStatus.SEARCHED) for s in stills]
    assert np.allclose(cl.probe.vector, fuse_templates(list(stills.values())), atol=1e-6)
    assert cl.candidates[0].subject_id == "alice" and not cl.low_quality
    assert sorted(o.face_id or "" for o in rig.outcomes()) == ["s0:f0", "s1:f0", "s2:f0"]  # each still is final
    assert rig.worker.run_once() == 0 and len(rig.lists()) == 1  # closed: never searched again
    assert rig.store.pending_outbox() == []  # published rows (with crops) are not kept


def test_a_redelivered_still_makes_no_second_list(rig: Rig) -> None:
    batch = [emb(embedding("s0", unit(0, base=0))), rep(report("s0", 1)), rep(report("s1", 0)),
             rep(report("s2", 0))]
    rig.handle(*batch)
    rig.worker.run_once()
    assert rig.handle(*batch) == [[], [], [], []]  # at-least-once: the same messages again
    rig.worker.run_once()
    assert len(rig.lists()) == 1
    assert [s.status for s in rig.lists()[0].stills] == [StillStatus.SEARCHED, StillStatus.NO_USABLE_FACE,
                                                        StillStatus.NO_USABLE_FACE]


def test_pending_faces_survive_a_crash(rig: Rig) -> None:
    rig.handle(emb(embedding("s0", unit(0, base=0))), rep(report("s0", 1)), rep(report("s1", 0)))
    rig.restart()  # the process died after committing the offsets of those messages
    rig.handle(rep(report("s2", 0)))
    assert rig.worker.run_once() == 1 and len(rig.lists()) == 1


def test_a_crash_before_the_broker_acknowledged_publishes_again_with_the_same_event_id(rig: Rig) -> None:
    rig.handle(emb(embedding("s0", unit(0, base=0))), rep(report("s0", 1)), rep(report("s1", 0)),
               rep(report("s2", 0)))
    rig.producer.fail = True
    rig.worker.tick()  # searched and closed, but the broker refused: the rows stay in the outbox
    assert len(rig.store.pending_outbox()) == 2
    rig.producer.fail = False
    rig.restart()
    rig.worker.run_once()
    ids = [cl.event_id for cl in rig.lists()]
    assert len(ids) == 2 and len(set(ids)) == 1  # a repeat the review service drops on event_id
    assert rig.store.pending_outbox() == []


def test_the_timeout_searches_what_arrived(rig: Rig) -> None:
    rig.handle(emb(embedding("s0", unit(0, base=0))), rep(report("s0", 1)))
    rig.clock.now = T0 + timedelta(seconds=119)
    assert rig.worker.run_once() == 0
    rig.clock.now = T0 + timedelta(seconds=120)
    assert rig.worker.run_once() == 1
    [cl] = rig.lists()
    assert [s.submission_id for s in cl.stills] == ["s0"] and cl.stills_expected == 3


def test_an_incident_of_unknown_size_waits_for_the_timeout(rig: Rig) -> None:
    m = meta(stills=None)
    rig.handle(emb(embedding("s0", unit(0, base=0), m=m)), rep(report("s0", 1, m=m)))
    assert rig.worker.run_once() == 0
    rig.clock.now = T0 + timedelta(seconds=121)
    assert rig.worker.run_once() == 1 and rig.lists()[0].stills_expected is None


def test_a_face_after_its_incident_was_searched_is_searched_alone(rig: Rig) -> None:
    rig.handle(emb(embedding("s0", unit(0, base=0))), rep(report("s0", 1)))
    rig.clock.now = T0 + timedelta(seconds=200)
    rig.worker.run_once()
    [[listed, _]] = rig.handle(emb(embedding("s1", unit(1, base=1))))
    late = decode(CandidateList, cast(Output, listed).value)
    assert late.event_id == "s1:f0" and late.incident_id == "inc-1" and late.candidates[0].subject_id == "bob"
    assert [s.submission_id for s in late.stills] == ["s1"]
    assert rig.handle(rep(report("s1", 1))) == [[]]  # a late report changes nothing


def test_a_still_with_several_faces_is_searched_face_by_face(rig: Rig) -> None:
    rig.handle(emb(embedding("s0", unit(0, base=0))), rep(report("s0", 1)),
               emb(embedding("s1", unit(1, base=1), index=0)), emb(embedding("s1", unit(2), index=1)),
               rep(report("s1", 2)), rep(report("s2", 0)))
    rig.worker.run_once()
    lists = {cl.event_id: cl for cl in rig.lists()}
    assert set(lists) == {incident_event_id("r1", "inc-1"), "s1:f0", "s1:f1"}
    fused = lists[incident_event_id("r1", "inc-1")]
    assert [s.status for s in fused.stills] == [StillStatus.SEARCHED, StillStatus.SEVERAL_FACES,
                                                StillStatus.NO_USABLE_FACE]
    assert np.allclose(fused.probe.vector, unit(0, base=0), atol=1e-6)  # only s0's face is in the probe


def test_an_investigative_search_is_marked_low_quality_and_never_dropped(rig: Rig) -> None:
    [[listed, _]] = rig.handle(emb(embedding("s9", unit(3), m=meta(None), gated="too_small")))
    cl = decode(CandidateList, cast(Output, listed).value)
    assert cl.low_quality and cl.outcome == "no_candidate"  # a no-candidate list is still a list
    [[listed, _]] = rig.handle(emb(embedding("s8", unit(0, base=0), m=meta(None))))
    assert not decode(CandidateList, cast(Output, listed).value).low_quality


def test_an_incident_with_a_gated_face_is_low_quality(rig: Rig) -> None:
    rig.handle(emb(embedding("s0", unit(0, base=0), gated="blurry")), rep(report("s0", 1)), rep(report("s1", 0)),
               rep(report("s2", 0)))
    rig.worker.run_once()
    assert rig.lists()[0].low_quality


def test_incident_messages_without_a_store_are_dead_lettered(rig: Rig) -> None:
    handler = MatchHandler(rig.gallery, MatchSettings(), TOPICS)
    [result] = handler.handle_batch(msgs(rep(report("s0", 1))))
    assert isinstance(result, PoisonMessage)
    [result] = handler.handle_batch(msgs(rep(b"{nonsense")))
    assert isinstance(result, PoisonMessage) and result.reason == "invalid_message"


def test_an_incident_that_cannot_be_searched_past_its_timeout_is_reported_overdue(rig: Rig) -> None:
    gauges: dict[str, list[int]] = {"pending": [], "overdue": []}
    gallery_up = False

    def build(incident: Incident) -> list[OutboxRow]:
        if not gallery_up:
            raise DependencyUnavailable("milvus", "connection refused")
        return rig.handler.build_incident(incident)

    worker = IncidentWorker(rig.store, build, DeliveryTracker(cast(Any, rig.producer)), TOPICS, rig.timeout_s, 0.1,
                            on_pending=gauges["pending"].append, on_overdue=gauges["overdue"].append)
    rig.handle(emb(embedding("s0", unit(0, base=0))), rep(report("s0", 1)))
    worker.tick()  # waits for its other stills: pending, not overdue
    rig.clock.now = T0 + timedelta(seconds=121)
    worker.tick()  # due, and the search fails: overdue
    worker.tick()
    gallery_up = True
    worker.tick()  # searched and published
    assert gauges == {"pending": [1, 1, 1, 0], "overdue": [0, 1, 1, 0]}
    assert [s.submission_id for s in rig.lists()[0].stills] == ["s0"]


def test_a_searched_incident_whose_list_waits_in_the_outbox_is_still_overdue(rig: Rig) -> None:
    rig.handle(emb(embedding("s0", unit(0, base=0))), rep(report("s0", 1)))
    assert rig.store.overdue_count(rig.timeout_s) == 0
    rig.clock.now = T0 + timedelta(seconds=121)
    assert rig.store.overdue_count(rig.timeout_s) == 1
    [key] = rig.store.due(rig.timeout_s)
    assert rig.store.close(key, rig.handler.build_incident)  # searched; Kafka has not taken the list yet
    assert rig.store.overdue_count(rig.timeout_s) == 1
    rig.store.mark_published([r.id for r in rig.store.pending_outbox()])
    assert rig.store.overdue_count(rig.timeout_s) == 0


def searched(rig: Rig, incident: str = "inc-1") -> None:
    """Search and publish a complete incident of three stills (one face, two stills without): four item rows."""
    m = meta(incident)
    rig.handle(emb(embedding(f"{incident}.s0", unit(0, base=0), m=m)), rep(report(f"{incident}.s0", 1, m=m)),
               rep(report(f"{incident}.s1", 0, m=m)), rep(report(f"{incident}.s2", 0, m=m)))
    assert rig.worker.run_once() == 1


def stored(store: IncidentStore) -> dict[str, tuple[bool, int]]:
    """Each stored incident: (closed, item rows)."""
    with store.engine.connect() as conn:
        per_key = select(items.c.incident_key, func.count()).group_by(items.c.incident_key)
        counts: dict[str, int] = dict(conn.execute(per_key).tuples().all())
        return {key: (closed is not None, counts.get(key, 0))
                for key, closed in conn.execute(select(incidents.c.incident_key, incidents.c.closed_at))}


def test_an_old_closed_published_incident_is_purged_with_its_items_and_a_recent_one_kept(rig: Rig) -> None:
    searched(rig, "old")
    rig.clock.now = T0 + timedelta(days=2)
    searched(rig, "recent")
    rig.clock.now = T0 + timedelta(seconds=RETENTION_S + 1)
    assert stored(rig.store) == {"r1/old": (True, 4), "r1/recent": (True, 4)}
    assert rig.store.purge_closed(RETENTION_S) == 1
    assert stored(rig.store) == {"r1/old": (True, 0), "r1/recent": (True, 4)}  # its face and report ids are gone
    assert rig.store.purge_closed(RETENTION_S) == 0  # the closed row that stays is not purged again
    rig.clock.now = T0 + timedelta(days=2, seconds=RETENTION_S - 1)
    assert rig.store.purge_closed(RETENTION_S) == 0 and stored(rig.store)["r1/recent"] == (True, 4)


def test_purging_goes_by_batches_oldest_first(rig: Rig) -> None:
    for i, name in enumerate(["a", "b", "c"]):
        rig.clock.now = T0 + timedelta(hours=i)
        searched(rig, name)
    rig.clock.now = T0 + timedelta(days=30)
    assert rig.store.purge_closed(RETENTION_S, limit=2) == 2
    assert stored(rig.store) == {"r1/a": (True, 0), "r1/b": (True, 0), "r1/c": (True, 4)}
    assert rig.store.purge_closed(RETENTION_S, limit=2) == 1 and stored(rig.store)["r1/c"] == (True, 0)
    assert rig.store.purge_closed(RETENTION_S, limit=2) == 0


def test_an_open_incident_is_never_purged_whatever_its_age(rig: Rig) -> None:
    rig.handle(emb(embedding("s0", unit(0, base=0))), rep(report("s0", 1)))  # waits for s1 and s2: never run
    rig.clock.now = T0 + timedelta(days=365)
    assert rig.store.purge_closed(RETENTION_S) == 0
    assert stored(rig.store) == {"r1/inc-1": (False, 2)}


def test_an_incident_whose_list_waits_in_the_outbox_is_kept(rig: Rig) -> None:
    searched(rig, "other")  # closed and published
    rig.handle(emb(embedding("s0", unit(0, base=0))), rep(report("s0", 1)), rep(report("s1", 0)),
               rep(report("s2", 0)))
    [key] = rig.store.due(rig.timeout_s)
    assert rig.store.close(key, rig.handler.build_incident)  # closed at the same time; Kafka has not taken its list
    rig.clock.now = T0 + timedelta(days=30)
    assert rig.store.purge_closed(RETENTION_S) == 1 and stored(rig.store) == {"r1/other": (True, 0), key: (True, 4)}
    rig.store.mark_published([r.id for r in rig.store.pending_outbox()])
    assert rig.store.purge_closed(RETENTION_S) == 1 and stored(rig.store)[key] == (True, 0)


def test_an_outbox_row_from_before_migration_0002_holds_every_purge(rig: Rig) -> None:
    searched(rig)
    with rig.store.engine.begin() as conn:  # written before outbox rows named their incident
        conn.execute(insert(outbox).values(topic="matches", message_key="k", event_id="e", payload=b"{}",
                                           published=0, incident_key=None))
    rig.clock.now = T0 + timedelta(days=30)
    assert rig.store.purge_closed(RETENTION_S) == 0
    rig.store.mark_published([r.id for r in rig.store.pending_outbox()])
    assert rig.store.purge_closed(RETENTION_S) == 1


def test_the_worker_purges_at_most_once_per_interval(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[float] = []
    purged: list[int] = []
    purge_closed = rig.store.purge_closed

    def spy(older_than_s: float, limit: int = PURGE_BATCH) -> int:
        calls.append(older_than_s)
        return purge_closed(older_than_s, limit)

    rig.store.purge_closed = spy  # type: ignore[method-assign]
    ticks = [0.0]
    worker = IncidentWorker(rig.store, rig.handler.build_incident, DeliveryTracker(cast(Any, rig.producer)), TOPICS,
                            rig.timeout_s, 0.1, retention_s=RETENTION_S, purge_interval_s=60.0,
                            on_purged=purged.append, clock=lambda: ticks[0])
    searched(rig)
    rig.clock.now = T0 + timedelta(seconds=RETENTION_S + 1)
    with caplog.at_level(logging.INFO, logger="services.match.incident_worker"):
        for ticks[0] in (0.0, 0.5, 30.0, 59.9):
            worker.tick()
    assert calls == [RETENTION_S] and purged == [1] and stored(rig.store) == {"r1/inc-1": (True, 0)}
    assert "1 closed incident(s) purged" in caplog.text
    for ticks[0] in (60.0, 61.0, 119.0, 120.0):
        worker.tick()
    assert len(calls) == 3 and purged == [1]  # at 60 and 120; nothing more to purge: no count, no log
    assert caplog.text.count("purged") == 1


def test_the_worker_goes_on_at_the_next_pass_after_a_full_batch(rig: Rig) -> None:
    answers = [PURGE_BATCH, 3, 0]
    rig.store.purge_closed = lambda older_than_s, limit=PURGE_BATCH: answers.pop(0)  # type: ignore[method-assign]
    purged: list[int] = []
    worker = IncidentWorker(rig.store, rig.handler.build_incident, DeliveryTracker(cast(Any, rig.producer)), TOPICS,
                            rig.timeout_s, 0.1, retention_s=RETENTION_S, on_purged=purged.append, clock=lambda: 5.0)
    assert [worker.purge() for _ in range(3)] == [PURGE_BATCH, 3, 0]  # the third is within the interval
    assert purged == [PURGE_BATCH, 3] and answers == [0]


def test_a_failing_purge_is_logged_once_per_outage_and_retried(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    answers: list[int | Exception] = [OperationalError("DELETE", {}, Exception("database is locked"))] * 3 + [2]

    def purge(older_than_s: float, limit: int = PURGE_BATCH) -> int:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    rig.store.purge_closed = purge  # type: ignore[method-assign]
    ticks = [0.0]
    purged: list[int] = []
    worker = IncidentWorker(rig.store, rig.handler.build_incident, DeliveryTracker(cast(Any, rig.producer)), TOPICS,
                            rig.timeout_s, 0.1, retention_s=RETENTION_S, purge_interval_s=60.0,
                            on_purged=purged.append, clock=lambda: ticks[0])
    with caplog.at_level(logging.INFO, logger="services.match.incident_worker"):
        for ticks[0] in (0.0, 60.0, 120.0, 180.0):
            worker.tick()
    assert answers == [] and purged == [2]
    assert caplog.text.count("closed incidents not purged") == 1
    assert "closed incidents are being purged again" in caplog.text


def test_a_worker_without_retention_never_purges(rig: Rig) -> None:
    searched(rig)
    rig.clock.now = T0 + timedelta(days=365)
    rig.worker.tick()
    assert stored(rig.store) == {"r1/inc-1": (True, 4)}


def test_a_face_of_a_purged_incident_is_searched_alone_as_any_late_face(rig: Rig) -> None:
    face = emb(embedding("inc-1.s0", unit(0, base=0), m=meta("inc-1")))
    searched(rig)
    assert rig.handle(face) == [[]] and rig.store.open_count() == 0  # redelivered before the purge: nothing to do
    rig.clock.now = T0 + timedelta(seconds=RETENTION_S + 1)
    assert rig.store.purge_closed(RETENTION_S) == 1
    [[listed, _]] = rig.handle(face)  # a replay, or the reference used again: never dropped as a repeat
    late = decode(CandidateList, cast(Output, listed).value)
    first = rig.lists()[0]
    assert first.event_id == incident_event_id("r1", "inc-1") and late.event_id == "inc-1.s0:f0" != first.event_id
    assert late.incident_id == "inc-1" and [s.submission_id for s in late.stills] == ["inc-1.s0"]
    assert rig.handle(rep(report("inc-1.s3", 1, m=meta("inc-1")))) == [[]]  # a report changes nothing
    assert stored(rig.store) == {"r1/inc-1": (True, 0)} and rig.store.open_count() == 0


def test_closed_incidents_must_be_kept_longer_than_the_incident_timeout() -> None:
    assert RETENTION_S == 8 * 86_400
    with pytest.raises(ValidationError, match="closed_incident_retention_s"):
        MatchSettings(incident_timeout_s=600, closed_incident_retention_s=600)
    with pytest.raises(ValidationError):
        MatchSettings(closed_incident_retention_s=0)
