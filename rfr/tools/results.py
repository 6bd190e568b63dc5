"""Read the pipeline's final outcomes, de-duplicated on ``event_id``: what a case system or a test sees.

Whether a still is final is :func:`rfr.core.progress.summarize`'s rule (the same one ingest's status API and the stack
benchmark apply). The collector also waits, for each face whose outcome says it was searched, for the candidate
list itself (it travels on the matches topic beside the outcome), since that is what it shows. The list of a
multi-still incident (CandidateList v4) is filed under every still whose face it fused, keyed by that face.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, Message

from rfr.core import kafka
from rfr.core.progress import Progress, summarize
from rfr.core.schemas import CandidateList, OutcomeEvent, OutcomeStatus, StillStatus, decode
from rfr.core.settings import KafkaSettings
from rfr.core.topics import Topics

logger = logging.getLogger(__name__)

_SEARCHED = (OutcomeStatus.PASSED_FOR_REVIEW, OutcomeStatus.NO_CANDIDATE)
ACCEPTS_LISTS = frozenset({3, 4})  # CandidateList schema versions this reader understands
ACCEPTS_OUTCOMES = frozenset({1})  # OutcomeEvent schema versions


@dataclass
class SubmissionResult:
    submission_id: str
    outcomes: list[OutcomeEvent] = field(default_factory=list)
    lists: dict[str, CandidateList] = field(default_factory=dict)

    @property
    def progress(self) -> Progress:
        return summarize(self.outcomes)

    @property
    def failed_faces(self) -> set[str]:
        """Faces whose search failed (their dead letter came with a ``failed`` outcome naming them)."""
        return {o.face_id for o in self.outcomes if o.status == OutcomeStatus.FAILED and o.face_id}

    @property
    def final(self) -> bool:
        """Final by :func:`rfr.core.progress.summarize`, and every searched face's candidate list is in."""
        searched = {o.face_id for o in self.outcomes if o.status in _SEARCHED and o.face_id}
        return self.progress.final and searched <= set(self.lists)

    @property
    def best_subject(self) -> str | None:
        """The highest-scoring candidate over every face of the still, or None when no list names anyone."""
        candidates = [c for cl in self.lists.values() for c in cl.candidates]
        return max(candidates, key=lambda c: c.score).subject_id if candidates else None

    @property
    def final_status(self) -> str:
        """rejected, failed or no_face for the whole still; else candidates or no_candidate."""
        status = self.progress.status
        if status in (OutcomeStatus.REJECTED, OutcomeStatus.FAILED, OutcomeStatus.NO_FACE):
            return status
        return "candidates" if any(c.outcome == "candidates" for c in self.lists.values()) else "no_candidate"


@dataclass
class ResultCollector:
    """Consumes candidate lists and outcomes from the beginning, in its own consumer group."""

    kafka_settings: KafkaSettings
    group: str
    results: dict[str, SubmissionResult] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    duplicates: int = 0
    unreadable: int = 0
    _consumer: Consumer | None = None

    def _topics(self) -> list[str]:
        t = Topics.from_settings(self.kafka_settings)
        return [t.matches, t.outcomes]

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
        try:
            if msg.topic() == self._topics()[0]:
                cl = decode(CandidateList, msg.value(), accepts=ACCEPTS_LISTS)
                for still in cl.probe_stills:  # a fused incident list is the list of every still it fused
                    if still.status == StillStatus.SEARCHED and still.face_id:
                        self._result(still.submission_id).lists[still.face_id] = cl
            else:
                oe = decode(OutcomeEvent, msg.value(), accepts=ACCEPTS_OUTCOMES)
                self._result(oe.submission_id).outcomes.append(oe)
        except ValueError as exc:  # another version, or not an event at all: counted, never fatal to the reader
            self.unreadable += 1
            logger.warning("%s[%s]@%s unreadable: %s", msg.topic(), msg.partition(), msg.offset(), exc)

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
