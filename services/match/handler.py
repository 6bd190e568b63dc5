"""The match stage: EmbeddingEvents in, one CandidateList per probe face and an OutcomeEvent out.

One gallery search call per consumed batch. Every CandidateList records the threshold, ``top_k``, the
watch-lists searched and the model id; when nothing scores at or above the threshold it is an explicit
``no_candidate`` list. Candidate lists are for trained human review and are never phrased as an
identification; the OutcomeEvent for the submitter names no one.

Bad input goes to the dead-letter topic: an undecodable message (``invalid_message``), an EmbeddingEvent of a
schema version other than :data:`ACCEPTS` (``unsupported_schema_version``), an embedding of another
model than the gallery's (``model_mismatch``), a vector of the wrong dimension (``dim_mismatch``) or a zero /
non-finite vector (``invalid_vector``). A gallery that cannot be reached, or that does not fit the embeddings
(a deployment fault), raises :class:`DependencyUnavailable`: the loop rewinds and retries the batch with backoff
for as long as that lasts, and nothing is dead-lettered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime

import numpy as np
import pydantic
from confluent_kafka import Message

from rfr.core.kafka import Output
from rfr.core.reasons import Reason
from rfr.core.schemas import (
    Candidate,
    CandidateList,
    EmbeddingEvent,
    OutcomeEvent,
    OutcomeStatus,
    Probe,
    UnsupportedSchemaVersion,
    decode,
    utcnow,
)
from rfr.core.settings import MatchSettings
from rfr.core.stream import DependencyUnavailable, PoisonMessage, Result
from rfr.core.topics import Topics
from rfr.gallery.base import Gallery, GalleryError, GalleryMismatchError, SubjectHit
from services.match.metrics import MatchMetrics

logger = logging.getLogger(__name__)

PASSED_DETAIL = "possible candidates passed to trained human reviewers (not an identification)"
NO_CANDIDATE_DETAIL = "no gallery candidate at or above the review threshold"
GALLERY = "gallery"  # the dependency's name in rfr_match_dependency_retries_total
ACCEPTS = frozenset({3})
"""EmbeddingEvent schema versions this stage reads (v3: with the probe's still reference, box and crop)."""


class MatchHandler:
    """:class:`rfr.core.stream.BatchHandler` of the match service."""

    def __init__(self, gallery: Gallery, settings: MatchSettings, topics: Topics,
                 metrics: MatchMetrics | None = None, clock: Callable[[], datetime] = utcnow) -> None:
        self.gallery = gallery
        self.settings = settings
        self.topics = topics
        self.metrics = metrics
        self.clock = clock

    def handle_batch(self, messages: Sequence[Message]) -> list[Result]:
        dim = self._gallery_dim()
        results: list[Result] = []
        probes: list[tuple[int, EmbeddingEvent]] = []
        for i, msg in enumerate(messages):
            try:
                probes.append((i, self._parse(msg, dim)))
                results.append([])
            except PoisonMessage as exc:
                results.append(exc)
        if probes:
            started_at = self.clock()
            found = self._search([event for _, event in probes], dim)
            searched_at = self.clock()
            for (i, event), hits in zip(probes, found, strict=True):
                results[i] = self._outputs(event, hits, started_at, searched_at)
        return results

    def check_dependencies(self) -> None:
        """:class:`DependencyUnavailable` ("gallery") when the gallery does not answer."""
        self._gallery_dim()

    def _gallery_dim(self) -> int | None:
        try:
            return self.gallery.dim()
        except GalleryError as exc:
            raise DependencyUnavailable(GALLERY, f"gallery not available: {exc}") from exc

    def _parse(self, msg: Message, dim: int | None) -> EmbeddingEvent:
        try:
            event = decode(EmbeddingEvent, msg.value(), accepts=ACCEPTS)
        except UnsupportedSchemaVersion as exc:
            raise PoisonMessage(exc.reason, exc.detail) from exc
        except (pydantic.ValidationError, ValueError) as exc:
            raise PoisonMessage(Reason.INVALID_MESSAGE, str(exc)[:500]) from exc
        if event.model_id != self.gallery.model_id:
            raise PoisonMessage(Reason.MODEL_MISMATCH,
                                f"embedding model {event.model_id!r}, gallery model {self.gallery.model_id!r}")
        if dim is not None and event.dim != dim:
            raise PoisonMessage(Reason.DIM_MISMATCH, f"template of {event.dim} values, gallery dimension {dim}")
        vector = event.vector
        if not np.all(np.isfinite(vector)) or not np.any(vector):
            raise PoisonMessage(Reason.INVALID_VECTOR, "zero or non-finite embedding")
        return event

    def _search(self, events: list[EmbeddingEvent], dim: int | None) -> list[list[SubjectHit]]:
        if dim is None:  # nothing enrolled for this model yet
            return [[] for _ in events]
        vectors = np.stack([e.vector for e in events])
        started = time.perf_counter()
        try:
            found = self.gallery.search(vectors, self.settings.top_k, self.settings.watch_lists,
                                       self.settings.threshold)
        except GalleryMismatchError as exc:
            logger.error("gallery does not fit the embeddings (fix the deployment): %s", exc)
            raise DependencyUnavailable(GALLERY, str(exc)) from exc
        except GalleryError as exc:
            raise DependencyUnavailable(GALLERY, f"gallery search failed: {exc}") from exc
        if self.metrics:
            self.metrics.search_seconds.observe(time.perf_counter() - started)
        return found

    def _outputs(self, event: EmbeddingEvent, hits: list[SubjectHit], started_at: datetime,
                 searched_at: datetime) -> list[Output]:
        candidates = [
            Candidate(rank=rank, subject_id=h.subject_id, score=round(h.score, 6), watch_list=h.watch_list,
                      gallery_face_id=h.face_id, source_ref=h.source_ref or None)
            for rank, h in enumerate(hits, start=1)
        ]
        outcome = "candidates" if candidates else "no_candidate"
        result = CandidateList(
            event_id=event.face_id, face_id=event.face_id, submission_id=event.submission_id, meta=event.meta,
            received_at=event.received_at, searched_at=searched_at, outcome=outcome, candidates=candidates,
            threshold=self.settings.threshold, top_k=self.settings.top_k, watch_lists=list(self.settings.watch_lists),
            model_id=self.gallery.model_id, quality=event.quality, search_started_at=started_at,
            probe=Probe(still_ref=event.still_ref, box=event.box, crop_jpeg=event.crop_jpeg, template=event.template),
        )
        status = OutcomeStatus.PASSED_FOR_REVIEW if candidates else OutcomeStatus.NO_CANDIDATE
        progress = OutcomeEvent.make(event.submission_id, event.meta.retailer_id, status, face_id=event.face_id,
                                     detail=PASSED_DETAIL if candidates else NO_CANDIDATE_DETAIL)
        if self.metrics:
            self.metrics.searches.labels(outcome).inc()
            self.metrics.candidates.observe(len(candidates))
            self.metrics.end_to_end_seconds.observe(max(0.0, (self.clock() - event.received_at).total_seconds()))
        return [
            Output(self.topics.matches, result.to_bytes(), key=event.submission_id, event_id=result.event_id),
            Output(self.topics.outcomes, progress.to_bytes(), key=event.submission_id, event_id=progress.event_id),
        ]
