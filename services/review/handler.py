"""The review service's stream handler: candidate lists become cases, gallery changes are kept and re-searched.

Consumes ``rfr.matches.v1``, ``rfr.gallery.v1`` and ``rfr.clusters.v1`` (group ``rfr-review``), at least once:

* a :class:`~rfr.core.schemas.CandidateList` (schema v3 or v4) is recorded by the review store: its search is audited,
  its probe kept, and a list with candidates becomes a pending case. The store ignores an ``event_id`` it has
  already recorded, so a redelivered list never makes a second case.
* a :class:`~rfr.core.review_messages.GalleryChange` (v1) is recorded (enrolled photos become viewable beside the
  candidates; an erasure is audited and its photos no enrolled face still uses are deleted from the blob store).
  For an enrolment, with ``review.re_search`` on, unsolved probes are searched again against the new faces only;
  each new candidate list is an output to ``rfr.matches.v1`` (key: its submission id), produced with the batch
  before the offsets are committed, consumed back by this handler, and made a case. A redelivered change is
  re-searched again: the lists have the same event ids, so they are de-duplicated, and none is lost when the
  service died before producing them. Confirmed clusters are searched against the new faces too
  (:func:`rfr.review.research.re_search_clusters`: kept with each cluster, once per change).
* a :class:`~rfr.core.cluster_messages.ClusterEvent` (v1) is recorded (:mod:`rfr.review.clusters`): the highest
  revision of each cluster wins, a redelivered or older one changes nothing, absorbed clusters retire.

An undecodable message, or one of another schema version, is dead-lettered (:class:`PoisonMessage`). A store
that does not answer raises :class:`DependencyUnavailable` ("review_store"): the batch is retried for as long as
it lasts. Any other database refusal is retried within ``stream.max_attempts`` (a race between replicas passes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

import pydantic
from confluent_kafka import Message
from sqlalchemy.exc import SQLAlchemyError

from rfr.core.blobstore import BlobStore
from rfr.core.cluster_messages import ClusterEvent
from rfr.core.db import STORE_OUTAGES
from rfr.core.kafka import Output
from rfr.core.logs import ids
from rfr.core.reasons import Reason
from rfr.core.review_messages import GalleryChange
from rfr.core.schemas import CandidateList, UnsupportedSchemaVersion, decode
from rfr.core.schemas import Message as WireMessage
from rfr.core.stream import DependencyUnavailable, PoisonMessage, Result, RetryableError
from rfr.core.topics import Topics
from rfr.review.clusters import ClusterRecorded
from rfr.review.views import GalleryChangeResult
from services.review.metrics import ReviewMetrics
from services.review.outages import STORE

logger = logging.getLogger(__name__)

CANDIDATE_LISTS = frozenset({3, 4})
"""CandidateList schema versions read (v3: with the probe, the search start and the trigger; v4: with the stills
of an incident, the low-quality mark and the threshold policy)."""
GALLERY_CHANGES = frozenset({1})
CLUSTER_EVENTS = frozenset({1})

T = TypeVar("T")
W = TypeVar("W", bound=WireMessage)
ReSearch = Callable[[GalleryChange], list[CandidateList]]
ClusterReSearch = Callable[[GalleryChange], int]
"""Confirmed clusters searched against a change's new faces: the searches kept."""


class CaseRecorder(Protocol):
    """What the handler needs of :class:`rfr.review.store.ReviewStore`."""

    def record_search(self, cl: CandidateList) -> int | None: ...

    def record_gallery_change(self, change: GalleryChange) -> GalleryChangeResult: ...

    def record_cluster(self, event: ClusterEvent) -> ClusterRecorded: ...


class ReviewHandler:
    """:class:`rfr.core.stream.BatchHandler` of the review service.

    ``re_search``: the probes to search again after an enrolment (:func:`rfr.review.research.re_search` bound to
    the store, match settings and clock), None when ``review.re_search`` is off. ``ping`` raises when the store
    does not answer (:func:`services.review.outages.ping`). ``blobs``: where erased gallery photos are deleted: the
    gallery photos' store (``<blob_dir>/gallery``), never the stills'. ``re_search_clusters``: confirmed clusters
    searched after an enrolment (:func:`rfr.review.research.re_search_clusters` bound likewise), None when off.
    """

    def __init__(self, store: CaseRecorder, topics: Topics, *, re_search: ReSearch | None = None,
                 blobs: BlobStore | None = None, ping: Callable[[], None] | None = None,
                 metrics: ReviewMetrics | None = None, re_search_clusters: ClusterReSearch | None = None) -> None:
        self.store = store
        self.re_search_clusters = re_search_clusters
        self.topics = topics
        self.re_search = re_search
        self.blobs = blobs
        self.ping = ping
        self.metrics = metrics

    def handle_batch(self, messages: Sequence[Message]) -> list[Result]:
        results: list[Result] = []
        for msg in messages:
            try:
                results.append(self._handle(msg))
            except PoisonMessage as exc:
                results.append(exc)
        return results

    def check_dependencies(self) -> None:
        """:class:`DependencyUnavailable` ("review_store") when the store does not answer."""
        if self.ping is not None:
            self._store(self.ping)

    def _handle(self, msg: Message) -> list[Output]:
        topic = msg.topic()
        if topic == self.topics.matches:
            return self._candidate_list(_parse(CandidateList, msg, CANDIDATE_LISTS))
        if topic == self.topics.gallery:
            return self._gallery_change(_parse(GalleryChange, msg, GALLERY_CHANGES))
        if topic == self.topics.clusters:
            return self._cluster(_parse(ClusterEvent, msg, CLUSTER_EVENTS))
        raise PoisonMessage(Reason.INVALID_MESSAGE, f"the review service does not read topic {topic!r}")

    def _candidate_list(self, cl: CandidateList) -> list[Output]:
        case_id = self._store(self.store.record_search, cl)
        if case_id is not None:
            logger.info("case %s from %s (%d candidate(s), %s)", case_id, cl.event_id, len(cl.candidates),
                        cl.trigger, extra=ids(cl.submission_id, cl.face_id))
        if self.metrics is not None:
            if case_id is not None:
                self.metrics.cases_created.labels(cl.trigger).inc()
            if case_id is not None or cl.outcome == "no_candidate":
                self.metrics.searches_recorded.labels(cl.outcome).inc()
        return []

    def _gallery_change(self, change: GalleryChange) -> list[Output]:
        result = self._store(self.store.record_gallery_change, change)
        if result.new:
            logger.info("gallery change %s: %s %d face(s) on %s by %s", change.event_id, change.action,
                        len(change.faces), change.watch_list, change.actor)
        self._delete_photos(result.orphaned_photo_refs)
        if change.action != "enrolled":
            return []
        if self.re_search_clusters is not None:
            self._store(self.re_search_clusters, change)
        if self.re_search is None:
            return []
        lists = self._store(self.re_search, change)
        if lists:
            logger.info("re-search after %s: %d probe(s) with new candidates", change.event_id, len(lists))
        return [Output(self.topics.matches, cl.to_bytes(), key=cl.submission_id, event_id=cl.event_id)
                for cl in lists]

    def _cluster(self, event: ClusterEvent) -> list[Output]:
        done = self._store(self.store.record_cluster, event)
        if done.new:
            logger.info("cluster %s revision %d recorded: %d sighting(s), %d new, %d absorbed, %s", event.cluster_id,
                        event.revision, len(event.sightings), len(done.added), len(done.merged), done.status)
        return []

    def _delete_photos(self, refs: Sequence[str]) -> None:
        """Erased photos that no enrolled face uses any more leave the blob store (best effort, logged)."""
        if self.blobs is None:
            return
        for ref in refs:
            try:
                self.blobs.delete(ref)
            except (OSError, ValueError) as exc:
                logger.error("erased gallery photo %s could not be deleted from the blob store: %s", ref, exc)

    def _store(self, call: Callable[..., T], *args: object) -> T:
        """``call(*args)`` on the store: an outage becomes DependencyUnavailable, any other database refusal a
        RetryableError (charged to the message, dead-lettered after ``max_attempts``)."""
        try:
            return call(*args)
        except STORE_OUTAGES as exc:
            raise DependencyUnavailable(STORE, f"{type(exc).__name__}: {exc}"[:500]) from exc
        except SQLAlchemyError as exc:
            raise RetryableError(f"review store refused: {type(exc).__name__}: {exc}"[:500]) from exc


def _parse(model: type[W], msg: Message, accepts: frozenset[int]) -> W:
    try:
        return decode(model, msg.value(), accepts=accepts)
    except UnsupportedSchemaVersion as exc:
        raise PoisonMessage(exc.reason, exc.detail) from exc
    except (pydantic.ValidationError, ValueError) as exc:
        raise PoisonMessage(Reason.INVALID_MESSAGE, f"not a {model.__name__}: {exc}"[:500]) from exc
