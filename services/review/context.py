"""What the review API works on: the stores, the blob store, and hooks into the service."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from rfr.core.blobstore import BlobStore
from rfr.core.review_messages import DecisionEvent
from rfr.core.settings import ReviewSettings, Settings
from rfr.review.audit import AuditLog
from rfr.review.store import ReviewStore
from rfr.review.users import UserStore
from services.review.api_models import RetentionOut
from services.review.metrics import ReviewMetrics

if TYPE_CHECKING:
    from services.review.web.throttle import LoginThrottle

DecisionFeed = Callable[[int, int], list[tuple[int, DecisionEvent]]]
"""(after, limit) -> final decisions as (cursor, event), oldest first."""


def _no_retention() -> RetentionOut:
    return RetentionOut(policy={}, last_run_at=None, next_run_in_s=None, last_report=None)


@dataclass
class ApiContext:
    """What the API works on. ``blobs``: the stills; ``photos``: the enrolled gallery photos (a store of their own,
    so that erasing a photo never deletes a still with the same bytes, nor retention an enrolled photo).
    ``on_final`` is called after a step that may have made a final decision (the service wakes the outbox
    publisher); ``retention`` reports the retention schedule."""

    store: ReviewStore
    users: UserStore
    audit: AuditLog
    blobs: BlobStore
    decisions: DecisionFeed
    session_ttl_s: float = 28800.0
    retention: Callable[[], RetentionOut] = _no_retention
    metrics: ReviewMetrics | None = None
    on_final: Callable[[], None] = field(default=lambda: None)
    settings: Settings | None = None
    """The service's settings (the pages read ``review``; the gallery page erases through them); None in tests
    that need only the defaults of :attr:`review_settings`."""
    photos: BlobStore | None = None
    """Where enrolled gallery photos are kept (:func:`rfr.core.settings.gallery_blob_dir`), apart from the stills in
    ``blobs``; None: in ``blobs`` (tests). Read through :attr:`photo_store`."""

    @property
    def photo_store(self) -> BlobStore:
        """The gallery photos' blob store: :attr:`photos`, else :attr:`blobs`."""
        return self.photos if self.photos is not None else self.blobs

    @property
    def review_settings(self) -> ReviewSettings:
        """``settings.review``, or the defaults when no settings were given."""
        return self.settings.review if self.settings is not None else ReviewSettings()

    @cached_property
    def login_throttle(self) -> LoginThrottle:
        """The sign-in throttle (``review.login_max_failures`` / ``login_max_delay_s``), one per context: shared by
        the sign-in page and ``POST /v1/login``, so neither is a way around the other."""
        from services.review.web.throttle import LoginThrottle  # the web package imports this module

        rs = self.review_settings
        return LoginThrottle(rs.login_max_failures, rs.login_max_delay_s)
