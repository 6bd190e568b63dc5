"""Erasing a subject from the gallery page: the erasure is announced on the gallery topic FIRST, then the subject's
photos are deleted from the Milvus gallery, as ``rfr gallery delete`` does (:mod:`rfr.tools.gallery_cli`).

Announce first, because the review service learns of an erasure only from the announcement (its handler marks the
photos erased and writes the ``gallery_erasure`` audit entry with the administrator's name and reason): when the
broker cannot be reached nothing is erased and the page says so; when Milvus fails after the announcement, the
review service already shows the photos as erased and the page asks to erase again (which completes it). The
photos erased are those Milvus holds of the subject on the watch-list and those the review store still shows
there (so a subject erased from Milvus without announcement can be erased from the review pages too).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Engine

from rfr.core.kafka import BrokerUnavailable, DeliveryFailed
from rfr.core.review_messages import GalleryChange
from rfr.core.settings import Settings
from rfr.gallery.base import GalleryError, check_subject_id, check_watch_list_name
from rfr.gallery.changes import announce_gallery_changes, erasure_changes
from rfr.review.gallery_index import live_face_ids

logger = logging.getLogger(__name__)

BROKER_WAIT_S = 5.0
"""How long an erasure waits for the broker to answer before refusing (the administrator is waiting)."""
DELIVERY_TIMEOUT_S = 15.0
MIN_REASON = 3


class SubjectGallery(Protocol):
    """What erasing needs of :class:`rfr.gallery.milvus.MilvusGallery`."""

    @property
    def model_id(self) -> str: ...

    def subject_faces(self, subject_id: str, watch_lists: Sequence[str] | None = None) -> list[tuple[str, str]]: ...

    def delete_subject(self, subject_id: str, watch_lists: Sequence[str] | None = None) -> int: ...

    def close(self) -> None: ...


class ErasureRefused(Exception):
    """Nothing (or not everything) was erased: ``reason`` (``invalid``, ``reason_required``, ``not_configured``,
    ``gallery_unavailable``, ``broker_unavailable``, ``nothing_to_erase``, ``announced_not_erased``) and a
    ``message`` for people; ``status`` the HTTP status of the page that says so."""

    def __init__(self, reason: str, message: str, status: int = 503) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status


@dataclass(frozen=True)
class ErasureResult:
    """An erasure done: photos announced (in ``event_ids``' changes) and photos deleted from Milvus."""

    watch_list: str
    subject_id: str
    announced: int
    erased: int
    event_ids: list[str]


def open_milvus(settings: Settings) -> SubjectGallery:
    """The Milvus gallery of ``settings`` (imported here: pymilvus is loaded only when an erasure needs it)."""
    from rfr.gallery.milvus import open_gallery

    return open_gallery(settings)


def announce_changes(settings: Settings, changes: Sequence[GalleryChange]) -> None:
    """Produce ``changes`` on the gallery topic (created if missing) and wait for every acknowledgement. Raises
    :class:`BrokerUnavailable` or :class:`DeliveryFailed` (producing again is safe: the handler drops a change it
    has, by event id)."""
    topic = announce_gallery_changes(settings.kafka, changes, broker_wait_s=BROKER_WAIT_S,
                                     delivery_timeout_s=DELIVERY_TIMEOUT_S)
    logger.info("announced %d gallery erasure change(s) on %s", len(changes), topic)


@dataclass
class GalleryEraser:
    """Erases subjects through ``settings`` (None: refused as ``not_configured``). ``opener`` and ``announcer``
    default to :func:`open_milvus` and :func:`announce_changes`, looked up at each call."""

    settings: Settings | None
    engine: Engine
    opener: Callable[[Settings], SubjectGallery] | None = None
    announcer: Callable[[Settings, Sequence[GalleryChange]], None] | None = None

    def erase(self, watch_list: str, subject_id: str, actor: str, reason: str) -> ErasureResult:
        """Announce, then delete every photo of ``subject_id`` on ``watch_list``. Raises :class:`ErasureRefused`."""
        why = _checked(watch_list, subject_id, reason)
        if self.settings is None:
            raise ErasureRefused("not_configured", "this review service was started without its settings: it "
                                 "cannot reach the gallery; erase with `rfr gallery delete`")
        settings = self.settings
        try:
            gallery = (self.opener or open_milvus)(settings)
        except (GalleryError, OSError) as exc:
            raise _gallery_down(settings, exc, "nothing was erased") from exc
        try:
            return self._erase(settings, gallery, watch_list, subject_id, actor, why)
        finally:
            gallery.close()

    def _erase(self, settings: Settings, gallery: SubjectGallery, watch_list: str, subject_id: str, actor: str,
               why: str) -> ErasureResult:
        try:
            faces = set(gallery.subject_faces(subject_id, [watch_list]))
        except GalleryError as exc:
            raise _gallery_down(settings, exc, "nothing was erased") from exc
        faces |= {(f, watch_list) for f in live_face_ids(self.engine, watch_list, subject_id)}
        if not faces:
            raise ErasureRefused("nothing_to_erase", f"{subject_id} has no photo on {watch_list} to erase (in the "
                                 "gallery or the review store)", 404)
        changes = erasure_changes(subject_id, sorted(faces), gallery.model_id, actor, why)
        try:
            (self.announcer or announce_changes)(settings, changes)
        except (BrokerUnavailable, DeliveryFailed) as exc:
            logger.warning("erasure of a subject not announced: %s", exc)
            raise ErasureRefused("broker_unavailable", f"nothing was erased: the review service could not be told "
                                 f"(Kafka at {settings.kafka.bootstrap_servers}: {exc}); try again when the broker "
                                 "is up") from exc
        try:
            erased = gallery.delete_subject(subject_id, [watch_list])
        except GalleryError as exc:
            raise _gallery_down(settings, exc, "the erasure was announced (the review pages show the photos as "
                                "erased) but the gallery still holds them: erase again to complete it",
                                "announced_not_erased") from exc
        logger.info("subject erased from watch-list %s by %s: %d photo(s) announced, %d deleted from the gallery",
                    watch_list, actor, len(faces), erased)
        return ErasureResult(watch_list, subject_id, len(faces), erased, [c.event_id for c in changes])


def _checked(watch_list: str, subject_id: str, reason: str) -> str:
    try:
        check_watch_list_name(watch_list)
        check_subject_id(subject_id)
    except ValueError as exc:
        raise ErasureRefused("invalid", str(exc), 422) from exc
    why = reason.strip()
    if len(why) < MIN_REASON:
        raise ErasureRefused("reason_required", f"give the reason for this erasure (the authority or reference), at "
                             f"least {MIN_REASON} characters", 422)
    return why


def _gallery_down(settings: Settings, exc: Exception, what: str, reason: str = "gallery_unavailable") -> ErasureRefused:
    logger.warning("gallery erasure: Milvus failed: %s", exc)
    return ErasureRefused(reason, f"{what}: the gallery (Milvus at {settings.milvus.uri}) is not available: {exc}")
