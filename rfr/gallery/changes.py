"""Gallery changes as the review service reads them: :class:`~rfr.core.review_messages.GalleryChange` events.

``rfr enrol`` and ``rfr gallery delete`` publish one on ``rfr.gallery.v1`` for the photos they enrolled or erased,
so that the review service keeps the photos viewable beside the probes (``photo_ref``), audits the change with its
actor and reason, and re-searches unsolved probes against new enrolments (``template``).

A change covers one watch-list and at most :data:`~rfr.core.schemas.GALLERY_CHANGE_MAX_FACES` photos; more photos
make several changes, in face id order. Each change's ``event_id`` is a hash of its action, watch-list, model id,
sorted face ids and a ``nonce``. Announcing photos that were already enrolled (``--announce-existing``) uses no
nonce, so the same photos give the same event, which the review service drops as a duplicate: no second audit
entry, no second re-search. A fresh enrolment or an erasure is a new fact each time (a subject erased and enrolled
again with the same photo must reach the review service twice): its nonce is the time of the change.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Literal

from rfr.core.kafka import Output, produce_and_wait
from rfr.core.review_messages import GALLERY_CHANGE_MAX_FACES, GalleryChange, GalleryFaceRecord
from rfr.core.schemas import template_bytes, utcnow
from rfr.core.settings import KafkaSettings
from rfr.core.topics import Topics
from rfr.gallery.enrol import EnrolledFace

GalleryAction = Literal["enrolled", "erased"]


def enrolled_records(faces: Iterable[EnrolledFace]) -> list[GalleryFaceRecord]:
    """The records of enrolled photos: ids, photo reference, source and template (little-endian float32)."""
    return [GalleryFaceRecord(face_id=f.face_id, subject_id=f.subject_id, photo_ref=f.photo_ref,
                              source_ref=f.source_ref, template=template_bytes(f.vector)) for f in faces]


def erased_records(subject_id: str, face_ids: Iterable[str]) -> list[GalleryFaceRecord]:
    """The records of erased photos of one subject: ids only (no template, no photo reference)."""
    return [GalleryFaceRecord(face_id=face_id, subject_id=subject_id) for face_id in face_ids]


def change_event_id(action: GalleryAction, watch_list: str, model_id: str, face_ids: Iterable[str],
                    nonce: str = "") -> str:
    """``gc-<action>-<sha256 hex>`` of the action, watch-list, model id, the sorted face ids and ``nonce``: the same
    photos announced twice with the same nonce give one event."""
    text = "\x00".join([action, watch_list, model_id, nonce, *sorted(face_ids)])
    return f"gc-{action}-{hashlib.sha256(text.encode()).hexdigest()}"


def gallery_changes(action: GalleryAction, watch_list: str, model_id: str, faces: Sequence[GalleryFaceRecord],
                    actor: str, reason: str = "", at: datetime | None = None, nonce: str = "") -> list[GalleryChange]:
    """``faces`` of one watch-list as changes of at most ``GALLERY_CHANGE_MAX_FACES`` photos each (a face id given
    twice counts once; sorted by face id, so the split is the same whatever the order given). ``at`` defaults to
    now (UTC). An empty ``faces`` gives no change; an erased record's template and photo reference are dropped;
    ``ValueError`` for an enrolled record without a template."""
    if action == "enrolled" and any(f.template is None for f in faces):
        raise ValueError("an enrolled photo needs its template (the review service re-searches against it)")
    unique = {f.face_id: f for f in faces}
    ordered = [unique[k] for k in sorted(unique)]
    if action == "erased":
        ordered = [f.model_copy(update={"template": None, "photo_ref": None}) for f in ordered]
    when = at or utcnow()
    out = []
    for start in range(0, len(ordered), GALLERY_CHANGE_MAX_FACES):
        chunk = ordered[start:start + GALLERY_CHANGE_MAX_FACES]
        out.append(GalleryChange(
            event_id=change_event_id(action, watch_list, model_id, (f.face_id for f in chunk), nonce), action=action,
            watch_list=watch_list, model_id=model_id, at=when, actor=actor, reason=reason, faces=chunk))
    return out


def enrolment_changes(faces: Sequence[EnrolledFace], model_id: str, actor: str, reason: str = "",
                      at: datetime | None = None) -> list[GalleryChange]:
    """The "enrolled" changes of an enrolment's photos (``EnrolReport.faces``), per watch-list: the photos enrolled
    now (nonce: the time) apart from those announced again (``existing``, no nonce)."""
    at = at or utcnow()
    out = []
    for existing, nonce in ((False, at.isoformat()), (True, "")):
        group = [f for f in faces if f.existing is existing]
        for watch_list in sorted({f.watch_list for f in group}):
            records = enrolled_records(f for f in group if f.watch_list == watch_list)
            out += gallery_changes("enrolled", watch_list, model_id, records, actor, reason, at, nonce)
    return out


def erasure_changes(subject_id: str, faces: Sequence[tuple[str, str]], model_id: str, actor: str, reason: str = "",
                    at: datetime | None = None) -> list[GalleryChange]:
    """The "erased" changes of one subject's photos, ``faces`` as ``(face_id, watch_list)``
    (:meth:`~rfr.gallery.base.Gallery.subject_faces`), per watch-list."""
    at = at or utcnow()
    return [change for watch_list in sorted({w for _, w in faces})
            for change in gallery_changes("erased", watch_list, model_id,
                                          erased_records(subject_id, (f for f, w in faces if w == watch_list)),
                                          actor, reason, at, at.isoformat())]


def announce_gallery_changes(kafka: KafkaSettings, changes: Sequence[GalleryChange], *, broker_wait_s: float,
                             delivery_timeout_s: float) -> str:
    """Produce ``changes`` on the gallery topic (created if missing) and wait for every acknowledgement; the topic's
    name. Keyed by watch-list, so the changes of one watch-list stay in order on one partition, each with its event
    id in the ``rfr-event-id`` header. Raises :class:`~rfr.core.kafka.BrokerUnavailable` or
    :class:`~rfr.core.kafka.DeliveryFailed` (:func:`~rfr.core.kafka.produce_and_wait`); producing again is safe:
    the review service drops a change it has, by event id."""
    topic = Topics.from_settings(kafka).gallery
    produce_and_wait(kafka, [Output(topic, c.to_bytes(), key=c.watch_list, event_id=c.event_id) for c in changes],
                     broker_wait_s=broker_wait_s, delivery_timeout_s=delivery_timeout_s)
    return topic
