"""The match stage: EmbeddingEvents in, one CandidateList per probe face and an OutcomeEvent out.

Multi-still incidents (``meta.incident_id``): a face of an incident, and each still's IncidentStillReport from
detect (topic ``rfr.incidents.v1``), are written to the pending-incident store (:mod:`services.match.incidents`)
instead of being searched; :mod:`services.match.incident_worker` searches the fused probe once the incident is
complete or timed out (:mod:`rfr.embedding.incidents` has the rule), through :meth:`MatchHandler.build_incident`.
A face that arrives after its incident was searched is searched alone, as a single still (also once the ids of
the incident's stills were purged, ``match.closed_incident_retention_s`` after its search). A face the
quality gate stopped but an investigative search let through (``gated_reason``) gives a list marked
``low_quality``.

One gallery search call per consumed batch (with ``match.score_norm=hubness``, one more read of the vectors of
gallery photos never seen before: :mod:`rfr.gallery.hubness`, whose CSLS scores the list then carries). Every
CandidateList records the threshold, ``top_k``, the watch-lists searched, the score normalisation and the model
id; when nothing scores at or above the threshold it is an explicit ``no_candidate`` list. Candidate lists are
for trained human review and are never phrased as an identification; the OutcomeEvent for the submitter names
no one.

Bad input goes to the dead-letter topic: an undecodable message (``invalid_message``), an EmbeddingEvent of a
schema version other than :data:`ACCEPTS` (``unsupported_schema_version``), an embedding of another
model than the gallery's (``model_mismatch``), a vector of the wrong dimension (``dim_mismatch``) or a zero /
non-finite vector (``invalid_vector``). A gallery that cannot be reached, or that does not fit the embeddings
(a deployment fault), raises :class:`DependencyUnavailable`: the loop rewinds and retries the batch with backoff
for as long as that lasts, and nothing is dead-lettered.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime

import numpy as np
import numpy.typing as npt
import pydantic
from confluent_kafka import Message
from sqlalchemy.exc import SQLAlchemyError

from rfr.core.kafka import Output
from rfr.core.reasons import Reason
from rfr.core.schemas import (
    Candidate,
    CandidateList,
    EmbeddingEvent,
    IncidentStillReport,
    OutcomeEvent,
    OutcomeStatus,
    Probe,
    ProbeStill,
    UnsupportedSchemaVersion,
    decode,
    utcnow,
)
from rfr.core.settings import MatchSettings
from rfr.core.stream import DependencyUnavailable, PoisonMessage, Result
from rfr.core.topics import Topics
from rfr.embedding.incidents import Incident, incident_event_id, plan_incident
from rfr.gallery.base import Gallery, GalleryError, GalleryMismatchError, SubjectHit
from rfr.gallery.hubness import HubnessSearch
from services.match.incidents import IncidentStore, OutboxRow, Recorded
from services.match.metrics import MatchMetrics
from services.match.thresholds import SearchThresholds

logger = logging.getLogger(__name__)

PASSED_DETAIL = "possible candidates passed to trained human reviewers (not an identification)"
NO_CANDIDATE_DETAIL = "no gallery candidate at or above the review threshold"
GALLERY = "gallery"  # the dependency's name in rfr_match_dependency_retries_total
ACCEPTS = frozenset({3, 4})
"""EmbeddingEvent schema versions this stage reads (v3: with the probe's still reference, box and crop; v4: with
``gated_reason``)."""
INCIDENT_STORE = "incident_store"  # the dependency's name in rfr_match_dependency_retries_total


class MatchHandler:
    """:class:`rfr.core.stream.BatchHandler` of the match service."""

    def __init__(self, gallery: Gallery, settings: MatchSettings, topics: Topics,
                 metrics: MatchMetrics | None = None, clock: Callable[[], datetime] = utcnow,
                 incidents: IncidentStore | None = None, wake: Callable[[], None] = lambda: None) -> None:
        self.gallery = gallery
        self.settings = settings
        self.topics = topics
        self.metrics = metrics
        self.clock = clock
        self.incidents = incidents
        self.wake = wake  # tells the incident worker that an incident may be complete
        self.gallery_lock = threading.Lock()  # the incident worker searches from its own thread
        self.thresholds = SearchThresholds(gallery, settings)  # threshold_policy and score_norm (docs/calibration.md)
        rule = self.thresholds.rule
        self.hubness = None if not rule.hubness_k or rule.cohort is None else HubnessSearch(
            rule.cohort.vectors, rule.hubness_k, max(settings.hubness_depth, settings.top_k))

    def handle_batch(self, messages: Sequence[Message]) -> list[Result]:
        dim = self._gallery_dim()
        results: list[Result] = []
        probes: list[tuple[int, EmbeddingEvent]] = []
        for i, msg in enumerate(messages):
            try:
                if msg.topic() == self.topics.incidents:
                    self._record(self._parse_report(msg))
                else:
                    event = self._parse(msg, dim)
                    if event.meta.incident_key is None or self._record(event) == Recorded.LATE:
                        probes.append((i, event))
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

    def _record(self, item: EmbeddingEvent | IncidentStillReport) -> Recorded:
        """Keep an incident's face or still report until the incident is searched (LATE: search the face alone)."""
        if self.incidents is None:
            raise PoisonMessage(Reason.INVALID_MESSAGE, "incident message, but this match has no incident store")
        try:
            if isinstance(item, IncidentStillReport):
                recorded = self.incidents.record_report(item)
            else:
                recorded = self.incidents.record_face(item)
        except SQLAlchemyError as exc:
            raise DependencyUnavailable(INCIDENT_STORE, f"pending-incident store: {exc}") from exc
        if recorded == Recorded.PENDING:
            self.wake()
        return recorded

    def _parse_report(self, msg: Message) -> IncidentStillReport:
        try:
            return decode(IncidentStillReport, msg.value())
        except UnsupportedSchemaVersion as exc:
            raise PoisonMessage(exc.reason, exc.detail) from exc
        except (pydantic.ValidationError, ValueError) as exc:
            raise PoisonMessage(Reason.INVALID_MESSAGE, str(exc)[:500]) from exc

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
        return self._search_vectors(np.stack([e.vector for e in events]), dim)

    def _search_vectors(self, vectors: npt.NDArray[np.float32], dim: int | None) -> list[list[SubjectHit]]:
        """Search ``vectors`` (shape ``(n, dim)``) in the watch-lists; one hit list per row."""
        if dim is None:  # nothing enrolled for this model yet
            return [[] for _ in vectors]
        limits = self.thresholds.for_vectors(vectors)  # one per probe: a cohort's T-norm sets each its own
        started = time.perf_counter()
        try:
            with self.gallery_lock:
                if self.hubness is not None:  # CSLS scores, re-ranked (rfr.gallery.hubness)
                    found = self.hubness.search(self.gallery, vectors, self.settings.top_k,
                                                self.settings.watch_lists, limits)
                else:
                    found = self.gallery.search(vectors, self.settings.top_k, self.settings.watch_lists,
                                               float(limits.min()))
        except GalleryMismatchError as exc:
            logger.error("gallery does not fit the embeddings (fix the deployment): %s", exc)
            raise DependencyUnavailable(GALLERY, str(exc)) from exc
        except GalleryError as exc:
            raise DependencyUnavailable(GALLERY, f"gallery search failed: {exc}") from exc
        if self.metrics:
            self.metrics.search_seconds.observe(time.perf_counter() - started)
        return [[h for h in row if h.score >= t] for row, t in zip(found, limits, strict=True)]

    def _outputs(self, event: EmbeddingEvent, hits: list[SubjectHit], started_at: datetime,
                 searched_at: datetime) -> list[Output]:
        """A single face's list (a face of an incident only when it came late or its still had several faces)."""
        still = ProbeStill(submission_id=event.submission_id, face_id=event.face_id, still_ref=event.still_ref,
                           box=event.box)
        result = self.candidate_list(event, hits, started_at, searched_at, face_id=event.face_id,
                                     template=event.template, stills=[still],
                                     low_quality=event.gated_reason is not None)
        return [Output(self.topics.matches, result.to_bytes(), key=event.submission_id, event_id=result.event_id),
                self._outcome(event, result)]

    def _outcome(self, event: EmbeddingEvent, result: CandidateList) -> Output:
        """The submitter's outcome for one searched face (``event``) of ``result``; names no one."""
        status = OutcomeStatus.PASSED_FOR_REVIEW if result.candidates else OutcomeStatus.NO_CANDIDATE
        progress = OutcomeEvent.make(event.submission_id, event.meta.retailer_id, status, face_id=event.face_id,
                                     detail=PASSED_DETAIL if result.candidates else NO_CANDIDATE_DETAIL)
        return Output(self.topics.outcomes, progress.to_bytes(), key=event.submission_id, event_id=progress.event_id)

    def candidate_list(self, event: EmbeddingEvent, hits: list[SubjectHit], started_at: datetime,
                       searched_at: datetime, *, face_id: str, template: bytes, stills: list[ProbeStill],
                       low_quality: bool, stills_expected: int | None = None) -> CandidateList:
        """The CandidateList v4 of one search; ``event`` is the probe face shown (an incident: its representative
        still), ``template`` what was searched, ``face_id`` the list's event id."""
        candidates = [
            Candidate(rank=rank, subject_id=h.subject_id, score=round(h.score, 6), watch_list=h.watch_list,
                      gallery_face_id=h.face_id, source_ref=h.source_ref or None)
            for rank, h in enumerate(hits, start=1)
        ]
        outcome = "candidates" if candidates else "no_candidate"
        threshold, gallery_size = self.thresholds.used(template)
        result = CandidateList(
            event_id=face_id, face_id=face_id, submission_id=event.submission_id, meta=event.meta,
            received_at=event.received_at, searched_at=searched_at, outcome=outcome, candidates=candidates,
            threshold=threshold, top_k=self.settings.top_k, watch_lists=list(self.settings.watch_lists),
            model_id=self.gallery.model_id, quality=event.quality, search_started_at=started_at,
            probe=Probe(still_ref=event.still_ref, box=event.box, crop_jpeg=event.crop_jpeg, template=template),
            incident_id=event.meta.incident_id, stills=stills, stills_expected=stills_expected,
            low_quality=low_quality, threshold_policy=self.thresholds.policy, gallery_size=gallery_size,
            score_norm=self.thresholds.score_norm,
        )
        if self.metrics:
            self.metrics.searches.labels(outcome).inc()
            self.metrics.candidates.observe(len(candidates))
            self.metrics.end_to_end_seconds.observe(max(0.0, (self.clock() - event.received_at).total_seconds()))
        return result

    def build_incident(self, incident: Incident) -> list[OutboxRow]:
        """Search one incident (see :mod:`rfr.embedding.incidents`): the fused probe's list (event id
        :func:`~rfr.embedding.incidents.incident_event_id`) with an outcome per fused face, and a list per face of
        a still with several faces. Raises :class:`DependencyUnavailable` when the gallery does not answer."""
        plan = plan_incident(incident)
        dim = self._gallery_dim()
        rows: list[OutboxRow] = []
        for event in plan.separate:
            started = self.clock()
            hits = self._search([event], dim)[0]
            rows += [self._row(out) for out in self._outputs(event, hits, started, self.clock())]
        shown, template = plan.representative, plan.template
        if shown is None or template is None:
            return rows
        started = self.clock()
        vector = np.frombuffer(template, dtype="<f4").astype(np.float32)[None, :]
        hits = self._search_vectors(vector, dim)[0]
        list_id = incident_event_id(shown.meta.retailer_id, shown.meta.incident_id or "")
        result = self.candidate_list(shown, hits, started, self.clock(), face_id=list_id, template=template,
                                     stills=plan.stills, low_quality=plan.low_quality,
                                     stills_expected=incident.expected)
        rows.append(OutboxRow("matches", list_id, result.event_id, result.to_bytes()))
        if self.metrics:  # every fused still's receipt to the list it is in (the shown one was observed above)
            now = self.clock()
            for event in plan.fused:
                if event is not shown:
                    self.metrics.end_to_end_seconds.observe(max(0.0, (now - event.received_at).total_seconds()))
        return rows + [self._row(self._outcome(event, result)) for event in plan.fused]

    def _row(self, out: Output) -> OutboxRow:
        """An output as an outbox row: topic ``matches`` or ``outcomes`` (the worker maps them to names)."""
        key = out.key.decode() if isinstance(out.key, bytes) else out.key or ""
        return OutboxRow("matches" if out.topic == self.topics.matches else "outcomes", key, out.event_id or "",
                         out.value)
