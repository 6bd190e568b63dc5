"""Read the pipeline's final outcomes, de-duplicated on ``event_id``: what a case system or a test sees.

A still is final when it was rejected, failed, had no usable face, or every face it yielded has a candidate
list (or no-candidate list) or a dead letter.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, Message

from rfr import kafka
from rfr.schemas import CandidateList, DeadLetter, OutcomeEvent, OutcomeStatus, decode
from rfr.settings import KafkaSettings
from rfr.topics import Topics

logger = logging.getLogger(__name__)

FINAL_WITHOUT_FACES = {OutcomeStatus.REJECTED, OutcomeStatus.FAILED, OutcomeStatus.NO_FACE}


@dataclass
class SubmissionResult:
    submission_id: str
    outcomes: dict[OutcomeStatus, OutcomeEvent] = field(default_factory=dict)
    lists: dict[str, CandidateList] = field(default_factory=dict)
    dead_faces: set[str] = field(default_factory=set)

    @property
    def expected_faces(self) -> int | None:
        found = self.outcomes.get(OutcomeStatus.FACES_FOUND)
        return found.faces if found else None

    @property
    def final(self) -> bool:
        if any(s in self.outcomes for s in FINAL_WITHOUT_FACES):
            return True
        expected = self.expected_faces
        return expected is not None and len(set(self.lists) | self.dead_faces) >= expected

    @property
    def best_subject(self) -> str | None:
        """The highest-scoring candidate over every face of the still, or None when no list names anyone."""
        candidates = [c for cl in self.lists.values() for c in cl.candidates]
        return max(candidates, key=lambda c: c.score).subject_id if candidates else None

    @property
    def final_status(self) -> str:
        for status in (OutcomeStatus.REJECTED, OutcomeStatus.FAILED, OutcomeStatus.NO_FACE):
            if status in self.outcomes:
                return status.value
        return "candidates" if any(c.outcome == "candidates" for c in self.lists.values()) else "no_candidate"


@dataclass
class ResultCollector:
    """Consumes matches, outcomes and dead letters from the beginning, in its own consumer group."""

    kafka_settings: KafkaSettings
    group: str
    results: dict[str, SubmissionResult] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    duplicates: int = 0
    _consumer: Consumer | None = None

    def _topics(self) -> list[str]:
        t = Topics.from_settings(self.kafka_settings)
        return [t.matches, t.outcomes, t.deadletter]

    def _result(self, submission_id: str) -> SubmissionResult:
        return self.results.setdefault(submission_id, SubmissionResult(submission_id))

    def add(self, msg: Message) -> None:
        headers = kafka.header_dict(msg)
        event_id = headers.get(kafka.EVENT_ID_HEADER)
        if event_id is not None:
            if event_id in self.seen:
                self.duplicates += 1
                return
            self.seen.add(event_id)
        topics = self._topics()
        if msg.topic() == topics[0]:
            cl = decode(CandidateList, msg.value())
            self._result(cl.submission_id).lists[cl.face_id] = cl
        elif msg.topic() == topics[1]:
            oe = decode(OutcomeEvent, msg.value())
            self._result(oe.submission_id).outcomes.setdefault(oe.status, oe)
        else:
            self._dead_letter(decode(DeadLetter, msg.value()))

    def _dead_letter(self, letter: DeadLetter) -> None:
        """A face's dead letter (embed/match stage) makes that face final; frame-level ones come as outcomes."""
        try:
            payload = json.loads(letter.payload or b"")
        except ValueError:
            return
        if isinstance(payload, dict) and "face_id" in payload and "submission_id" in payload:
            self._result(str(payload["submission_id"])).dead_faces.add(str(payload["face_id"]))

    def wait_for(self, submission_ids: Iterable[str], timeout_s: float) -> bool:
        """Consume until every submission is final or the time is up; True when all are final."""
        wanted = set(submission_ids)
        if self._consumer is None:
            self._consumer = kafka.make_consumer(self.kafka_settings, self.group)
            self._consumer.subscribe(self._topics())
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(s in self.results and self.results[s].final for s in wanted):
                return True
            for msg in self._consumer.consume(100, 0.5):
                if msg.error() is None:
                    self.add(msg)
        return all(s in self.results and self.results[s].final for s in wanted)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
