"""The blocking work of one consumed candidate list (run in a worker thread, never on faust's event loop).

:meth:`ClusterHandler.handle` decodes a record of ``rfr.matches.v1`` (CandidateList v3 or v4), keeps the unknown
faces (:func:`rfr.cluster.clusterer.wanted`), records each through the :class:`~rfr.cluster.clusterer.Clusterer`
and returns what to produce: the cluster event, a dead letter for a message that can never be processed, or
nothing. An outage of Milvus or of the cluster store raises
:class:`~rfr.core.stream.DependencyUnavailable` (the caller retries, with backoff, for as long as it lasts; the
step is idempotent, so a retry after a half-done try records nothing twice). A list Milvus can never take (a
``face_id`` over the index's key limit, checked when the list is read; any data or parameter error Milvus answers,
:class:`~rfr.cluster.index.IndexRefusedError`) is a poison message: dead-lettered at once, never retried.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, cast

import pydantic

from rfr.cluster.clusterer import Clusterer, CohortMismatchError, Step, wanted
from rfr.cluster.index import IndexMismatchError, IndexRefusedError, IndexUnavailableError, check_face_id
from rfr.core.db import STORE_OUTAGES
from rfr.core.deadletters import dead_letter
from rfr.core.kafka import Output
from rfr.core.metrics import StageMetrics
from rfr.core.reasons import Reason
from rfr.core.schemas import CandidateList, UnsupportedSchemaVersion, decode
from rfr.core.stream import DependencyUnavailable, PoisonMessage
from rfr.core.topics import Topics
from services.cluster.metrics import ClusterMetrics

logger = logging.getLogger(__name__)

SERVICE = "cluster"
CANDIDATE_LISTS = frozenset({3, 4})


@dataclass(frozen=True)
class RawMessage:
    """A consumed record, with the methods of confluent-kafka's ``Message`` that
    :func:`rfr.core.deadletters.dead_letter` reads (faust hands over its own record type)."""

    source: str
    part: int
    at: int
    raw_key: bytes | None
    raw_value: bytes | None
    raw_headers: list[tuple[str, bytes | None]] = field(default_factory=list)

    def topic(self) -> str:
        return self.source

    def partition(self) -> int:
        return self.part

    def offset(self) -> int:
        return self.at

    def key(self) -> bytes | None:
        return self.raw_key

    def value(self) -> bytes | None:
        return self.raw_value

    def headers(self) -> list[tuple[str, bytes | None]]:
        return self.raw_headers


def skip_reason(cl: CandidateList, include_low_quality: bool) -> str | None:
    """Why a list is not clustered (``candidates``, ``re_search``, ``low_quality``), or None to cluster it."""
    if wanted(cl, include_low_quality):
        return None
    if cl.outcome != "no_candidate":
        return "candidates"
    return "re_search" if cl.trigger != "submission" else "low_quality"


class ClusterHandler:
    """Candidate list in, outputs out; see the module doc. ``max_message_bytes``: the broker's limit, which a dead
    letter must stay under (it then goes without the payload)."""

    def __init__(self, clusterer: Clusterer, topics: Topics, metrics: ClusterMetrics, stage: StageMetrics, *,
                 include_low_quality: bool = False, max_message_bytes: int | None = None) -> None:
        self.clusterer = clusterer
        self.topics = topics
        self.metrics = metrics
        self.stage = stage
        self.include_low_quality = include_low_quality
        self.max_message_bytes = max_message_bytes

    def handle(self, msg: RawMessage) -> list[Output]:
        try:
            cl = _parse(msg)
            why = skip_reason(cl, self.include_low_quality)
            if why is not None:
                self.metrics.skipped.labels(why).inc()
                return []
            _check_keys(cl)
            step = self._record(cl)
        except PoisonMessage as exc:
            return [self.dead_letter(msg, exc)]
        if step.skipped is not None:
            self.metrics.skipped.labels(step.skipped).inc()
            return []
        self._count(step)
        if step.event is None:
            return []
        event = step.event
        return [Output(self.topics.clusters, event.to_bytes(), key=event.cluster_id, event_id=event.event_id)]

    def _record(self, cl: CandidateList) -> Step:
        try:
            return self.clusterer.record(cl)
        except IndexRefusedError as exc:  # before its base class, IndexUnavailableError: not an outage
            raise PoisonMessage(Reason.INVALID_MESSAGE, f"refused by the unknown-face index: {exc}"[:500]) from exc
        except IndexUnavailableError as exc:
            raise DependencyUnavailable("milvus", str(exc)[:500]) from exc
        except STORE_OUTAGES as exc:
            raise store_unavailable(exc) from exc
        except (IndexMismatchError, CohortMismatchError) as exc:
            raise PoisonMessage(Reason.MODEL_MISMATCH, str(exc)[:500]) from exc
        except ValueError as exc:  # a zero or non-finite template
            raise PoisonMessage(Reason.INVALID_MESSAGE, f"unusable probe template: {exc}"[:500]) from exc

    def _count(self, step: Step) -> None:
        if step.recorded:
            self.metrics.sightings.inc()
            self.metrics.sightings_per_cluster.observe(step.size)
            self.metrics.merges.inc(step.merged)
        else:
            logger.info("face already recorded (redelivery): cluster %s, %d sighting(s)", step.cluster_id, step.size)

    def dead_letter(self, msg: RawMessage, exc: Exception) -> Output:
        """The dead letter of ``msg`` (reason from ``exc``), counted by reason."""
        letter = dead_letter(SERVICE, cast(Any, msg), exc, self.topics.deadletter, self.max_message_bytes)
        self.stage.deadletters.labels(letter.headers["rfr-reason"]).inc()
        logger.warning("dead-lettered %s[%s]@%s: %s", msg.topic(), msg.partition(), msg.offset(), exc)
        return letter


def store_unavailable(exc: Exception) -> DependencyUnavailable:
    """The outage of the cluster store that ``exc`` (one of ``rfr.core.db.STORE_OUTAGES``) reports."""
    return DependencyUnavailable("cluster_store", f"{type(exc).__name__}: {exc}"[:500])


def _parse(msg: RawMessage) -> CandidateList:
    try:
        return decode(CandidateList, msg.value(), accepts=CANDIDATE_LISTS)
    except UnsupportedSchemaVersion as exc:
        raise PoisonMessage(exc.reason, exc.detail) from exc
    except (pydantic.ValidationError, ValueError) as exc:
        raise PoisonMessage(Reason.INVALID_MESSAGE, f"not a CandidateList: {exc}"[:500]) from exc


def _check_keys(cl: CandidateList) -> None:
    """PoisonMessage when a list to cluster has keys the index cannot take: a ``face_id`` over
    :data:`rfr.cluster.index.FACE_ID_MAX` UTF-8 bytes would fail every upsert (the Milvus primary key)."""
    try:
        check_face_id(cl.face_id)
    except IndexRefusedError as exc:
        raise PoisonMessage(Reason.INVALID_MESSAGE, str(exc)) from exc
