"""Stage level, on the real broker: a message whose handling always raises a retryable error (its dependencies
all up) is dead-lettered as ``retry_exhausted`` within ``max_attempts`` tries, with a ``failed`` outcome naming
its face, and the message behind it on the same partition is processed and committed."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from confluent_kafka import Message, TopicPartition
from support.broker import on, read_until

from rfr.core import kafka
from rfr.core.kafka import DeliveryTracker, Output
from rfr.core.schemas import DeadLetter, OutcomeEvent, OutcomeStatus, decode
from rfr.core.settings import KafkaSettings, Settings, StreamSettings
from rfr.core.stage import StageSpec, build_processor
from rfr.core.stream import Result, RetryableError
from rfr.core.topics import FACES, Topics

MAX_ATTEMPTS = 3


class AlwaysFailsOnOne:
    """Passes every face on to the embeddings topic, except ``sub_bad``'s, which always raises."""

    def __init__(self, topics: Topics) -> None:
        self.topics = topics
        self.tries: dict[str, int] = {}

    def handle_batch(self, messages: Sequence[Message]) -> list[Result]:
        events = [json.loads(m.value() or b"") for m in messages]
        for e in events:
            self.tries[e["submission_id"]] = self.tries.get(e["submission_id"], 0) + 1
        if any(e["submission_id"] == "sub_bad" for e in events):
            raise RetryableError("the model fails on this crop")
        return [[Output(self.topics.embeddings, json.dumps(e).encode(), key=e["submission_id"],
                        event_id=e["face_id"])] for e in events]

    def check_dependencies(self) -> None:
        """Everything it needs is up: the failure is the message's."""


def _face(sub: str) -> Output:
    body = {"submission_id": sub, "face_id": f"{sub}:f0", "meta": {"retailer_id": "r1"}}
    return Output("", json.dumps(body).encode(), key="one-partition", event_id=f"{sub}:f0")


def test_poison_face_is_dead_lettered_after_bounded_tries_and_the_partition_flows(
        kafka_settings: KafkaSettings) -> None:
    topics = Topics.from_settings(kafka_settings)
    tracker = DeliveryTracker(kafka.make_producer(kafka_settings))
    tracker.produce(Output(topics.faces, o.value, key=o.key, event_id=o.event_id)
                    for o in (_face("sub_a"), _face("sub_bad"), _face("sub_c")))
    tracker.flush()

    settings = Settings(kafka=kafka_settings, stream=StreamSettings(max_attempts=MAX_ATTEMPTS, retry_backoff_s=0.05))
    handler = AlwaysFailsOnOne(topics)
    spec = StageSpec("embedtest", "retry-test", [FACES], metrics_port=0, batch_size=8, batch_timeout_ms=200)
    processor = build_processor(settings, spec, topics, handler)
    processor.consumer.subscribe([topics.faces])
    deadline = time.monotonic() + 90
    try:
        while handler.tries.get("sub_c", 0) < 1 or handler.tries.get("sub_bad", 0) < MAX_ATTEMPTS:
            assert time.monotonic() < deadline, f"stalled: tries {handler.tries}"
            processor.step()
        for _ in range(3):  # let the last batch commit
            processor.step()
        committed = processor.consumer.committed(processor.consumer.assignment(), timeout=10)
    finally:
        processor.consumer.close()

    assert handler.tries["sub_bad"] == MAX_ATTEMPTS  # bounded: never tried again once dead-lettered
    records = read_until(kafka_settings, [topics.embeddings, topics.deadletter, topics.outcomes],
                         lambda rs: len(on(topics.deadletter, rs)) >= 1 and len(on(topics.embeddings, rs)) >= 2
                         and len(on(topics.outcomes, rs)) >= 1)
    passed = {json.loads(r.value)["submission_id"] for r in on(topics.embeddings, records)}
    assert passed == {"sub_a", "sub_c"}
    [letter_record] = on(topics.deadletter, records)
    assert letter_record.headers["rfr-reason"] == "retry_exhausted"
    letter = decode(DeadLetter, letter_record.value)
    assert json.loads(letter.payload or b"")["submission_id"] == "sub_bad"
    [outcome] = [decode(OutcomeEvent, r.value) for r in on(topics.outcomes, records)]
    assert (outcome.status, outcome.face_id) == (OutcomeStatus.FAILED, "sub_bad:f0")
    partition = letter.partition
    [position] = [tp.offset for tp in committed if isinstance(tp, TopicPartition) and tp.partition == partition]
    assert position == 3  # all three offsets of the partition committed: nothing blocks it
