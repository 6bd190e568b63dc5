"""The review service's stream handler with a fake store, its outbox publisher, and its scheduler."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from confluent_kafka import Message
from prometheus_client import CollectorRegistry
from sqlalchemy.exc import IntegrityError, OperationalError
from support.kafka import FakeMsg, FakeProducer
from support.metrics import sample
from support.review_data import candidate_list, enrolment, unit

from rfr.core.kafka import EVENT_ID_HEADER, DeliveryFailed, DeliveryTracker
from rfr.core.metrics import StageMetrics
from rfr.core.review_messages import GalleryChange
from rfr.core.schemas import CandidateList
from rfr.core.stream import DependencyUnavailable, PoisonMessage, RetryableError, StreamConfig, StreamProcessor
from rfr.core.topics import Topics
from rfr.review.views import GalleryChangeResult, OutboxItem, QueueStats
from services.review.handler import ReviewHandler
from services.review.metrics import ReviewMetrics
from services.review.periodic import Periodic
from services.review.publisher import OutboxPublisher

TOPICS = Topics("t")
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def outage() -> OperationalError:
    return OperationalError("SELECT 1", {}, Exception("could not connect to server"))


@dataclass
class FakeStore:
    """Records what the handler asks of the review store; ``fail`` raises on every call."""

    searches: dict[str, CandidateList] = field(default_factory=dict)
    changes: list[GalleryChange] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    fail: Exception | None = None
    next_case: int = 1

    def record_search(self, cl: CandidateList) -> int | None:
        if self.fail:
            raise self.fail
        if cl.event_id in self.searches:
            return None
        self.searches[cl.event_id] = cl
        if cl.outcome != "candidates":
            return None
        self.next_case += 1
        return self.next_case - 1

    def record_gallery_change(self, change: GalleryChange) -> GalleryChangeResult:
        if self.fail:
            raise self.fail
        new = all(c.event_id != change.event_id for c in self.changes)
        self.changes.append(change)
        return GalleryChangeResult(new=new, photos=len(change.faces), orphaned_photo_refs=self.orphans)


class FakeBlobs:
    def __init__(self) -> None:
        self.deleted: list[str] = []

    def delete(self, ref: str) -> None:
        self.deleted.append(ref)


def msgs(*items: tuple[str, bytes | None]) -> Sequence[Message]:
    return cast(Sequence[Message], [FakeMsg(v, i, topic=t) for i, (t, v) in enumerate(items)])


def make(store: FakeStore, re_search: Any = None, ping: Any = None) -> tuple[ReviewHandler, CollectorRegistry,
                                                                             FakeBlobs]:
    registry = CollectorRegistry()
    blobs = FakeBlobs()
    handler = ReviewHandler(store, TOPICS, re_search=re_search, blobs=blobs,  # type: ignore[arg-type]
                            ping=ping, metrics=ReviewMetrics.create(registry))
    return handler, registry, blobs


def test_a_candidate_list_is_recorded_once_and_counted() -> None:
    store = FakeStore()
    handler, registry, _ = make(store)
    cl = candidate_list("sub_a:f0")
    nothing = candidate_list("sub_b:f0", candidates=())
    results = handler.handle_batch(msgs((TOPICS.matches, cl.to_bytes()), (TOPICS.matches, nothing.to_bytes()),
                                        (TOPICS.matches, cl.to_bytes())))
    assert results == [[], [], []]
    assert sorted(store.searches) == ["sub_a:f0", "sub_b:f0"]
    assert sample(registry, "rfr_review_cases_created_total", trigger="submission") == 1
    assert sample(registry, "rfr_review_searches_recorded_total", outcome="candidates") == 1
    assert sample(registry, "rfr_review_searches_recorded_total", outcome="no_candidate") == 1


def test_bad_messages_are_poison_and_the_rest_of_the_batch_flows() -> None:
    store = FakeStore()
    handler, _, _ = make(store)
    v2 = json.loads(candidate_list("sub_a:f0").to_bytes()) | {"schema_version": 2}
    results = handler.handle_batch(msgs(
        (TOPICS.matches, b"{not json"), (TOPICS.matches, json.dumps(v2).encode()), (TOPICS.gallery, b"{}"),
        (TOPICS.matches, None), ("t.rfr.elsewhere.v1", b"{}"), (TOPICS.matches, candidate_list("sub_c:f0").to_bytes()),
    ))
    reasons = [r.reason if isinstance(r, PoisonMessage) else r for r in results]
    assert reasons == ["invalid_message", "unsupported_schema_version", "invalid_message", "invalid_message",
                       "invalid_message", []]
    assert list(store.searches) == ["sub_c:f0"]


def test_a_store_outage_retries_the_batch_and_other_refusals_are_retryable() -> None:
    handler, _, _ = make(FakeStore(fail=outage()))
    with pytest.raises(DependencyUnavailable) as down:
        handler.handle_batch(msgs((TOPICS.matches, candidate_list("sub_a:f0").to_bytes())))
    assert down.value.dependency == "review_store"
    handler, _, _ = make(FakeStore(fail=IntegrityError("INSERT", {}, Exception("duplicate key"))))
    with pytest.raises(RetryableError) as refused:
        handler.handle_batch(msgs((TOPICS.gallery, enrolment("gc-1", [("gf-1", "s1", unit((1, 1.0)))]).to_bytes())))
    assert not isinstance(refused.value, DependencyUnavailable)


def test_check_dependencies_pings_the_store() -> None:
    def ping() -> None:
        raise outage()

    handler, _, _ = make(FakeStore(), ping=ping)
    with pytest.raises(DependencyUnavailable):
        handler.check_dependencies()
    make(FakeStore(), ping=lambda: None)[0].check_dependencies()


def test_an_enrolment_is_re_searched_and_the_lists_go_to_the_matches_topic() -> None:
    store = FakeStore()
    change = enrolment("gc-1", [("gf-new", "subj-new", unit((5, 1.0)))])
    found = [candidate_list("sub_a:f0", [("subj-new", 0.9)], trigger="re_search", re_search_of="gc-1",
                            event_id="sub_a:f0:rs:gc-1")]
    asked: list[str] = []

    def re_search(c: GalleryChange) -> list[CandidateList]:
        asked.append(c.event_id)
        return found

    handler, _, _ = make(store, re_search=re_search)
    [outputs] = handler.handle_batch(msgs((TOPICS.gallery, change.to_bytes())))
    assert isinstance(outputs, list)
    [out] = outputs
    assert (out.topic, out.key, out.event_id) == (TOPICS.matches, "sub_a", "sub_a:f0:rs:gc-1")
    assert CandidateList.model_validate_json(out.value).trigger == "re_search"
    again = handler.handle_batch(msgs((TOPICS.gallery, change.to_bytes())))  # redelivered: searched again
    assert again == [outputs] and asked == ["gc-1", "gc-1"] and len(store.changes) == 2


def test_no_re_search_when_off_or_for_an_erasure_and_erased_photos_leave_the_blob_store() -> None:
    store = FakeStore(orphans=["sha256:" + "a" * 64])
    calls: list[str] = []

    def re_search(c: GalleryChange) -> list[CandidateList]:
        calls.append(c.event_id)
        return []

    handler, _, blobs = make(store, re_search=re_search)
    erased = enrolment("gc-2", [("gf-1", "s1", None)], action="erased")
    assert handler.handle_batch(msgs((TOPICS.gallery, erased.to_bytes()))) == [[]]
    assert calls == [] and blobs.deleted == ["sha256:" + "a" * 64]
    off, _, _ = make(FakeStore())
    assert off.handle_batch(msgs((TOPICS.gallery, enrolment("gc-3", [("gf-1", "s1", unit((1, 1.0)))]).to_bytes()))
                            ) == [[]]


class ScriptedConsumer:
    """One batch, then nothing; records commits."""

    def __init__(self, batch: Sequence[Message]) -> None:
        self.batch = list(batch)
        self.commits: list[Any] = []

    def poll(self, timeout: float) -> Message | None:
        return self.batch.pop(0) if self.batch else None

    def consume(self, n: int, timeout: float) -> list[Message]:
        out, self.batch = self.batch[:n], self.batch[n:]
        return out

    def commit(self, offsets: list[Any], asynchronous: bool) -> None:
        self.commits.append([(o.topic, o.offset) for o in offsets])


def test_in_the_stream_loop_a_dead_letter_has_no_failed_outcome_and_re_searches_are_produced() -> None:
    change = enrolment("gc-1", [("gf-new", "subj-new", unit((5, 1.0)))])
    found = [candidate_list("sub_a:f0", [("subj-new", 0.9)], trigger="re_search", re_search_of="gc-1",
                            event_id="sub_a:f0:rs:gc-1")]
    handler, _, _ = make(FakeStore(), re_search=lambda c: found)
    consumer = ScriptedConsumer(msgs((TOPICS.matches, b"garbage"), (TOPICS.gallery, change.to_bytes())))
    producer = FakeProducer()
    config = StreamConfig("review", [TOPICS.matches, TOPICS.gallery], TOPICS.deadletter, outcomes_topic=None)
    processor = StreamProcessor(config, consumer, DeliveryTracker(producer), handler,  # type: ignore[arg-type]
                                StageMetrics.create("review", CollectorRegistry()))
    assert processor.step() == 2
    assert [p.topic for p in producer.produced] == [TOPICS.deadletter, TOPICS.matches]
    assert producer.produced[1].headers[EVENT_ID_HEADER] == "sub_a:f0:rs:gc-1"
    assert consumer.commits


# --- the outbox publisher ----------------------------------------------------------------------------------
@dataclass
class FakeOutbox:
    items: list[OutboxItem]
    published: list[int] = field(default_factory=list)

    def pending_outbox(self, limit: int = 100) -> list[OutboxItem]:
        return [i for i in self.items if i.id not in self.published][:limit]

    def mark_published(self, ids: Sequence[int]) -> int:
        new = [i for i in ids if i not in self.published]
        self.published += new
        return len(new)


def item(n: int, topic: str = "decisions") -> OutboxItem:
    return OutboxItem(n, f"case-{n}:final", topic, f"case-{n}", f'{{"case_id": {n}}}'.encode(), NOW)


def test_the_publisher_marks_only_what_the_broker_acknowledged() -> None:
    outbox = FakeOutbox([item(1), item(2), item(3)])
    producer = FakeProducer(fail=True)
    publisher = OutboxPublisher(outbox, DeliveryTracker(producer), TOPICS, batch=2)  # type: ignore[arg-type]
    with pytest.raises(DeliveryFailed):
        publisher.publish_pending()
    publisher.tick()  # logged, not raised
    assert outbox.published == []
    producer.fail = False
    assert publisher.publish_pending() == 3
    assert outbox.published == [1, 2, 3]
    last = producer.produced[-3:]
    assert [(p.topic, p.key, p.headers[EVENT_ID_HEADER]) for p in last] == [
        (TOPICS.decisions, f"case-{n}", f"case-{n}:final") for n in (1, 2, 3)]
    assert publisher.publish_pending() == 0


def test_an_outbox_row_for_an_unknown_topic_is_never_marked() -> None:
    outbox = FakeOutbox([item(1, topic="elsewhere")])
    publisher = OutboxPublisher(outbox, DeliveryTracker(FakeProducer()), TOPICS)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown topic"):
        publisher.publish_pending()
    publisher.tick()
    assert outbox.published == []


# --- the scheduler and the gauges ---------------------------------------------------------------------------
def test_periodic_runs_first_after_its_delay_on_wake_and_finally_at_stop() -> None:
    runs: list[str] = []
    ran = threading.Event()

    def task() -> None:
        runs.append("run")
        ran.set()
        if len(runs) == 2:
            raise RuntimeError("a failing run is logged, the schedule goes on")

    job = Periodic("test", task, interval_s=3600, first_delay_s=0.0, final=lambda: runs.append("final")).start()
    assert ran.wait(5)
    ran.clear()
    assert job.seconds_to_next() is not None
    job.wake()
    assert ran.wait(5)
    job.stop()
    assert runs == ["run", "run", "final"] and job.failures == 1 and job.seconds_to_next() is None


def test_gauges_show_the_queue() -> None:
    registry = CollectorRegistry()
    metrics = ReviewMetrics.create(registry)
    counts = {"pending": 2, "awaiting_verification": 1, "escalated": 0, "lead": 4, "no_lead": 0, "expired": 0}
    metrics.show_stats(QueueStats(counts, datetime(2025, 3, 1, 11, 0, tzinfo=UTC), 3), NOW)
    assert sample(registry, "rfr_review_queue_cases", state="pending") == 2
    assert sample(registry, "rfr_review_oldest_pending_age_seconds") == 3600
    assert sample(registry, "rfr_review_outbox_pending") == 3
    metrics.show_stats(QueueStats(dict.fromkeys(counts, 0), None, 0), NOW)
    assert sample(registry, "rfr_review_oldest_pending_age_seconds") == 0
