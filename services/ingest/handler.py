"""The Kafka submission channel: encoded stills on the submissions topic, metadata in headers.

A retailer's system produces to ``rfr.core.topics.SUBMISSIONS`` (``<namespace>.rfr.submissions.v1`` with a
namespace). The message value is the encoded image (JPEG, PNG, WebP, BMP, TIFF or HEIC, as it came from the
camera or the export; the format is read from the bytes); the headers carry the metadata, UTF-8 encoded, each
``rfr-*`` header at most once (a repeated one, in any letter case, makes the metadata invalid):

=====================  ========  ===========================================================
header                 required  value
=====================  ========  ===========================================================
``rfr-retailer-id``    yes       the retailer (letters, digits and ``_.:@-``, at most 128)
``rfr-store-id``       yes       the store, same alphabet
``rfr-camera-id``      yes       the camera, same alphabet
``rfr-captured-at``    yes       ISO 8601 with a UTC offset, e.g. ``2024-05-01T13:45:07.250Z``
``rfr-case-ref``       no        an investigation or incident reference
``rfr-incident-id``    no        the incident this still is one frame of (same alphabet): its face is fused
                                 with the other stills' into one probe, searched once (docs/design.md)
``rfr-incident-stills`` no       how many stills the incident has (1-64); with it and no incident id, the
                                 case ref is the incident. Without it the incident is searched on a timeout
``rfr-investigative``  no        ``true``: search faces the quality gate stops too; their lists are marked
                                 low-quality (default ``false``)
=====================  ========  ===========================================================

The message key is not read; key by ``<retailer>/<store>/<camera>`` so one camera's stills stay in order.
The submission id is ``rfr.core.schemas.submission_id(retailer, value)``: the same still from the same retailer
is processed once (a second copy is dropped; a redelivery of the same message re-emits the same events,
which consumers de-duplicate on ``event_id``). A rejected still goes to the dead-letter topic with the
reason, its bytes and headers, and a ``rejected`` outcome event is produced.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from confluent_kafka import Message

from rfr.core.kafka import Output, header_dict_with_repeats
from rfr.core.logs import ids
from rfr.core.reasons import Reason
from rfr.core.schemas import Channel, OutcomeEvent, OutcomeStatus, submission_id
from rfr.core.stream import DependencyUnavailable, PoisonMessage, Result, RetryableError
from services.ingest.accept import Ingestor, RawMeta, Rejected, build_meta, valid_ident
from services.ingest.store import Claim, State, StoreUnavailable

logger = logging.getLogger(__name__)

H_RETAILER = "rfr-retailer-id"
H_STORE = "rfr-store-id"
H_CAMERA = "rfr-camera-id"
H_CAPTURED_AT = "rfr-captured-at"
H_CASE_REF = "rfr-case-ref"
H_INCIDENT_ID = "rfr-incident-id"
H_INCIDENT_STILLS = "rfr-incident-stills"
H_INVESTIGATIVE = "rfr-investigative"
HEADER_PREFIX = "rfr-"


def raw_meta(headers: dict[str, str]) -> RawMeta:
    return RawMeta(retailer_id=headers.get(H_RETAILER), store_id=headers.get(H_STORE),
                   camera_id=headers.get(H_CAMERA), captured_at=headers.get(H_CAPTURED_AT),
                   case_ref=headers.get(H_CASE_REF), incident_id=headers.get(H_INCIDENT_ID),
                   incident_stills=headers.get(H_INCIDENT_STILLS), investigative=headers.get(H_INVESTIGATIVE))


def submission_headers(retailer_id: str, store_id: str, camera_id: str, captured_at: str,
                       case_ref: str | None = None, incident_id: str | None = None,
                       incident_stills: int | None = None, investigative: bool = False) -> list[tuple[str, bytes]]:
    """The headers a producer attaches to a submission (for clients and tests)."""
    pairs = [(H_RETAILER, retailer_id), (H_STORE, store_id), (H_CAMERA, camera_id), (H_CAPTURED_AT, captured_at)]
    optional = [(H_CASE_REF, case_ref), (H_INCIDENT_ID, incident_id),
                (H_INCIDENT_STILLS, str(incident_stills) if incident_stills else None),
                (H_INVESTIGATIVE, "true" if investigative else None)]
    pairs += [(k, v) for k, v in optional if v]
    return [(k, v.encode()) for k, v in pairs]


def _repeated_detail(repeated: dict[str, int]) -> str:
    names = ", ".join(f"{name} ({n} times)" for name, n in sorted(repeated.items()))
    return f"header(s) given more than once: {names}; send each rfr-* header once"


class SubmissionHandler:
    """BatchHandler for the submissions topic (service ``ingest``, group ``rfr-ingest``)."""

    channel = Channel.KAFKA

    def __init__(self, ingestor: Ingestor) -> None:
        self.ingestor = ingestor

    def handle_batch(self, messages: Sequence[Message]) -> list[Result]:
        try:
            return [self.handle(m) for m in messages]
        except StoreUnavailable as exc:  # not the messages' fault: retry the batch
            raise DependencyUnavailable("submission_store", str(exc)) from exc

    def failure_outputs(self, msg: Message, detail: str) -> list[Output]:
        """The ``failed`` outcome of a still whose handling failed after it could not be rejected in the normal way
        (``retry_exhausted``, an unexpected error): its submission is named from the retailer header and the bytes,
        exactly as :meth:`handle` names it; none when the retailer header is unusable (nobody to tell)."""
        headers, repeated = header_dict_with_repeats(msg, HEADER_PREFIX)
        retailer = raw_meta(headers).retailer_id or ""
        if H_RETAILER in repeated or not valid_ident(retailer):
            return []
        sid = submission_id(retailer, msg.value() or b"")
        outcome = OutcomeEvent.make(sid, retailer, OutcomeStatus.FAILED, detail=detail[:500])
        return [Output(self.ingestor.topics.outcomes, outcome.to_bytes(), key=sid, event_id=outcome.event_id)]

    def check_dependencies(self) -> None:
        """:class:`DependencyUnavailable` when the submission store or the blob store cannot be used at all."""
        try:
            self.ingestor.store.get("sub_dependency_check")
        except StoreUnavailable as exc:
            raise DependencyUnavailable("submission_store", str(exc)) from exc
        try:
            self.ingestor.blobs.check()
        except OSError as exc:
            raise DependencyUnavailable("blobstore", f"blob store unusable: {exc}") from exc

    def _unattributable(self, reason: str, detail: str) -> PoisonMessage:
        """No usable retailer id: dead-letter it, with nobody to tell and nothing to record."""
        self.ingestor.metrics.rejections.labels(reason).inc()
        self.ingestor.count(self.channel, "rejected")
        return PoisonMessage(reason, detail)

    def handle(self, msg: Message) -> Result:
        data = msg.value() or b""
        source = f"kafka:{msg.topic()}:{msg.partition()}:{msg.offset()}"
        headers, repeated = header_dict_with_repeats(msg, HEADER_PREFIX)
        raw = raw_meta(headers)
        self.ingestor.received(self.channel, len(data))
        retailer = raw.retailer_id or ""
        if H_RETAILER in repeated:  # which retailer is it? nobody to attribute it to
            return self._unattributable(Reason.INVALID_METADATA, _repeated_detail(repeated))
        if not retailer:
            return self._unattributable(Reason.MISSING_METADATA, f"header {H_RETAILER} is missing")
        if not valid_ident(retailer):
            return self._unattributable(Reason.INVALID_METADATA, f"header {H_RETAILER} is not a valid id")
        sid = submission_id(retailer, data)
        seen = self.ingestor.store.get(sid)
        if seen is not None and seen.state == State.RECEIVED and seen.source != source:
            logger.info("duplicate submission %s (first from %s) dropped", sid, seen.source, extra=ids(sid))
            self.ingestor.count(self.channel, "duplicate")
            return []
        try:
            if repeated:
                raise Rejected(Reason.INVALID_METADATA, _repeated_detail(repeated))
            meta = build_meta(raw, self.channel)
            accepted = self.ingestor.accept(sid, meta, data, source)
        except Rejected as exc:
            outputs = self.ingestor.reject(sid, raw, self.channel, source, exc)
            return PoisonMessage(exc.reason, exc.detail, outputs=outputs)
        except OSError as exc:  # writing the claim-check blob failed: retried, bounded unless the store is down
            raise RetryableError(f"blob store write failed: {exc}") from exc
        claim = self.ingestor.store.claim(accepted.record)
        if claim == Claim.DUPLICATE:
            self.ingestor.count(self.channel, "duplicate")
            return []
        if claim == Claim.NEW:
            self.ingestor.count(self.channel, "accepted")
        return accepted.outputs
