"""Telling the review service about gallery changes: :class:`~rfr.core.review_messages.GalleryChange` events on
``rfr.gallery.v1``, produced by ``rfr enrol`` and ``rfr gallery delete`` and waited for until the broker has
acknowledged every one (``acks=all``); and what those commands say about it.

Keyed by watch-list, so the changes of one watch-list stay in order on one partition; each carries its event id in
the ``rfr-event-id`` header as every RFR event does. The tests replace :func:`announce` with a recorder
(``cli_gallery`` in tests/support/fixtures.py), so the commands call it through this module.
"""

from __future__ import annotations

import getpass
import logging
import os
from collections.abc import Sequence

import typer

from rfr.core.kafka import BrokerUnavailable, DeliveryFailed
from rfr.core.review_messages import GalleryChange
from rfr.core.settings import Settings
from rfr.core.topics import Topics
from rfr.gallery.changes import announce_gallery_changes, enrolment_changes
from rfr.gallery.enrol import EnrolReport

logger = logging.getLogger(__name__)

BROKER_WAIT_S = 10.0
"""How long an announcement waits for the broker to answer before giving up (:class:`BrokerUnavailable`)."""
DELIVERY_TIMEOUT_S = 30.0
"""How long it waits for the acknowledgements once produced (:class:`DeliveryFailed`)."""

AnnounceFailed = (BrokerUnavailable, DeliveryFailed)
"""What :func:`announce` raises when the review service could not be told."""


def cli_actor() -> str:
    """``cli:<operating-system user>``: who ran the command (``cli:uid<n>`` where the user has no name)."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = f"uid{os.getuid()}"
    return f"cli:{user}"


def gallery_topic(settings: Settings) -> str:
    """The gallery topic's name in this deployment (``rfr.gallery.v1``, with the topic namespace if any)."""
    return Topics.from_settings(settings.kafka).gallery


def announce(settings: Settings, changes: Sequence[GalleryChange], *, broker_wait_s: float = BROKER_WAIT_S,
             delivery_timeout_s: float = DELIVERY_TIMEOUT_S) -> None:
    """Produce ``changes`` to the gallery topic (created if missing, as the services create theirs) and wait for
    every acknowledgement. Nothing to do for no changes.

    Raises :class:`BrokerUnavailable` when the broker does not answer within ``broker_wait_s`` and
    :class:`DeliveryFailed` when a change was not acknowledged within ``delivery_timeout_s`` or the topic could not
    be made; producing again is safe (the review service drops a change it has, by event id).
    """
    if not changes:
        return
    topic = announce_gallery_changes(settings.kafka, changes, broker_wait_s=broker_wait_s,
                                     delivery_timeout_s=delivery_timeout_s)
    logger.info("announced %d gallery change(s) (%d photo(s)) on %s", len(changes),
                sum(len(c.faces) for c in changes), topic)


# -- what the commands say ---------------------------------------------------------------------------------------
NOT_TOLD_ENROLLED = ("enrolled, but the review service was not told: it will not show these photos or re-search "
                     "unsolved probes against them; start the stack (`rfr up`) and run again with "
                     "--announce-existing")


def not_told_erased(subject_id: str) -> str:
    """What a failed erasure announcement means (``rfr gallery delete`` then erases nothing)."""
    return (f"nothing was erased: the review service would keep showing the photos of {subject_id}; start the "
            "stack (`rfr up`) and run again, or erase from the gallery alone with --no-announce")


def announce_or_explain(settings: Settings, changes: Sequence[GalleryChange], meaning: str) -> bool:
    """:func:`announce`; when it fails, says why and ``meaning`` (what that leaves undone) on stderr and returns
    False."""
    try:
        announce(settings, changes)
    except AnnounceFailed as exc:
        photos = sum(len(c.faces) for c in changes)
        typer.echo(f"error: could not tell the review service ({gallery_topic(settings)}) about {photos} "
                   f"photo(s): {exc}", err=True)
        typer.echo(meaning, err=True)
        return False
    return True


def tell_enrolment(settings: Settings, report: EnrolReport, reason: str, *, announce: bool, existing: bool) -> bool:
    """Announce the photos listed in ``report`` as ``rfr enrol`` does, a line on stderr saying what happened
    (``announce`` False: only that they were not); False when the announcement failed."""
    topic = gallery_topic(settings)
    if not announce:
        typer.echo(f"not announced (--no-announce): the review service ({topic}) will not show these photos or "
                   "re-search unsolved probes against them until a run with --announce-existing", err=True)
        return True
    if report.skipped_existing and not existing:
        typer.echo(f"note: {report.skipped_existing} photo(s) already enrolled were not announced again "
                   "(--announce-existing does)", err=True)
    if not report.faces:
        return True
    changes = enrolment_changes(report.faces, report.model_id, cli_actor(), reason)
    if not announce_or_explain(settings, changes, NOT_TOLD_ENROLLED):
        return False
    typer.echo(f"announced {len(report.faces)} photo(s) to the review service ({topic})", err=True)
    return True
