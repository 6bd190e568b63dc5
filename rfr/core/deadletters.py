"""Dead letters, and the ``failed`` outcome that goes beside each one.

A message that a stage cannot process goes to the dead-letter topic with the reason and its original bytes. So
that the submitter's status still becomes final, the stage also publishes a ``failed`` OutcomeEvent naming the
submission (and the face, for a face-level event) whenever the message says which submission it belongs to.
:func:`failed_outcome` reads that from any pipeline event (FrameEvent, FaceEvent, EmbeddingEvent) leniently, so
an event that fails validation still gets its outcome as long as its identifiers can be read.
"""

from __future__ import annotations

import hashlib
import json
import traceback

from confluent_kafka import Message

from rfr.core.errors import ReasonedError
from rfr.core.ids import is_ident
from rfr.core.kafka import Output, header_dict
from rfr.core.schemas import DeadLetter, OutcomeEvent, OutcomeStatus

MAX_REASON_CHARS = 2000
MAX_OUTCOME_DETAIL_CHARS = 500


def reason_of(exc: Exception) -> tuple[str, str]:
    """(machine reason, human text) of ``exc``: a :class:`ReasonedError`'s own, else ``unhandled:<Type>``."""
    if isinstance(exc, ReasonedError):
        return exc.reason, str(exc)
    return f"unhandled:{type(exc).__name__}", "".join(traceback.format_exception_only(exc)).strip()


def dead_letter(service: str, msg: Message, exc: Exception, topic: str, max_bytes: int | None = None) -> Output:
    """The dead-letter message for ``msg``: reason, error type, origin, headers and the original bytes.

    The reason also travels as the ``rfr-reason`` header (the stage's dead-letter metric is labelled with it).
    When the letter would exceed ``max_bytes`` (the topic's message limit: the payload travels base64, 4/3 of its
    size) it goes without the payload, whose size and sha256 the reason then names, so the broker never refuses
    it and the partition never stalls on it; the payload stays at its origin (topic, partition, offset).
    """
    reason, text = reason_of(exc)
    source = msg.topic() or "?"
    letter = DeadLetter(
        event_id=f"{source}:{msg.partition()}:{msg.offset()}",
        service=service,
        reason=text[:MAX_REASON_CHARS],
        error_type=type(exc).__name__,
        source_topic=source,
        partition=msg.partition() or 0,
        offset=msg.offset() or 0,
        key=_as_bytes(msg.key()),
        headers=header_dict(msg),
        payload=_as_bytes(msg.value()),
    )
    value = letter.to_bytes()
    if max_bytes is not None and len(value) > max_bytes and letter.payload:
        data = letter.payload
        note = (f" [payload of {len(data)} bytes (sha256 {hashlib.sha256(data).hexdigest()}) not kept: the letter "
                f"would exceed the {max_bytes}-byte message limit; it is at its origin]")
        letter = letter.model_copy(update={"payload": None, "reason": letter.reason[: MAX_REASON_CHARS - len(note)]
                                           + note})
        value = letter.to_bytes()
    return Output(topic=topic, value=value, key=msg.key(), event_id=letter.event_id, headers={"rfr-reason": reason})


def _as_bytes(value: str | bytes | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def _ident(value: object) -> str | None:
    return value if isinstance(value, str) and is_ident(value) else None


EventIds = tuple[str | None, str | None, str | None]  # submission_id, face_id, meta.retailer_id


def event_ids(payload: bytes | str | None) -> EventIds:
    """(``submission_id``, ``face_id``, ``meta.retailer_id``) read leniently from a pipeline event's JSON; each
    None when absent or not a valid id (:func:`rfr.core.ids.is_ident`)."""
    try:
        data = json.loads(payload or b"")
    except (ValueError, UnicodeDecodeError):
        return None, None, None
    if not isinstance(data, dict):
        return None, None, None
    meta = data.get("meta")
    retailer = _ident(meta.get("retailer_id")) if isinstance(meta, dict) else None
    return _ident(data.get("submission_id")), _ident(data.get("face_id")), retailer


def failed_outcome(event: EventIds, detail: str, outcomes_topic: str) -> Output | None:
    """The ``failed`` outcome for a dead-lettered pipeline event, or None when it names no submission.

    ``event`` is what :func:`event_ids` read from the event as consumed. The outcome names ``submission_id``, the
    face (``face_id``) when the event is a face-level one, and the retailer (``meta.retailer_id``); its ``detail``
    is ``detail`` (the dead letter's reason text, see :func:`reason_of`) cut to 500 characters. It repeats nothing
    else of the payload.
    """
    submission, face, retailer = event
    if submission is None or retailer is None:
        return None
    outcome = OutcomeEvent.make(submission, retailer, OutcomeStatus.FAILED, face_id=face,
                                detail=detail[:MAX_OUTCOME_DETAIL_CHARS])
    return Output(outcomes_topic, outcome.to_bytes(), key=submission, event_id=outcome.event_id)
