"""The match service's incident worker: searches complete or timed-out incidents and publishes their lists.

A daemon thread, every ``match.incident_poll_s`` (and at once when the stream handler recorded something that may
complete an incident): for each due incident of the store (:meth:`IncidentStore.due`: complete, or older than
``match.incident_timeout_s``) it runs :meth:`MatchHandler.build_incident` inside :meth:`IncidentStore.close`
(outputs into the outbox, incident closed, in one transaction), then produces the outbox with a producer of its
own, waits for the broker's acknowledgements and only then deletes the rows. A crash anywhere publishes again
with the same event ids; nothing is lost. Failures (gallery, store, broker) are logged once per outage and
retried on the next pass. At most once a ``purge_interval_s`` (a minute) it purges the incidents closed longer
than ``match.closed_incident_retention_s`` ago (:meth:`IncidentStore.purge_closed`), one batch a pass until none
is left.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError

from rfr.core.kafka import DeliveryFailed, DeliveryTracker, Output
from rfr.core.logs import OutageLog
from rfr.core.stream import DependencyUnavailable
from rfr.core.topics import Topics
from services.match.incidents import PURGE_BATCH, Build, IncidentStore

logger = logging.getLogger(__name__)

FLUSH_TIMEOUT_S = 30.0
PURGE_INTERVAL_S = 60.0


class IncidentWorker:
    """Closes due incidents of ``store`` with ``build`` and publishes the outbox through ``tracker``; purges closed
    incidents ``retention_s`` seconds after their close (None: never), checked every ``purge_interval_s`` seconds of
    ``clock`` (monotonic seconds)."""

    def __init__(self, store: IncidentStore, build: Build, tracker: DeliveryTracker, topics: Topics,
                 timeout_s: float, poll_s: float, on_pending: Callable[[int], None] = lambda n: None,
                 on_overdue: Callable[[int], None] = lambda n: None, *, retention_s: float | None = None,
                 purge_interval_s: float = PURGE_INTERVAL_S, on_purged: Callable[[int], None] = lambda n: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.build = build
        self.tracker = tracker
        self.topics = {"matches": topics.matches, "outcomes": topics.outcomes}
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.on_pending = on_pending  # the rfr_match_incidents_pending gauge
        self.on_overdue = on_overdue  # the rfr_match_incidents_overdue gauge
        self.retention_s = retention_s
        self.purge_interval_s = purge_interval_s
        self.on_purged = on_purged  # the rfr_match_incidents_purged_total counter
        self.clock = clock
        self.closed = 0
        self._outage = OutageLog(logger, "pending incidents not searched or published yet (retrying every pass): %s",
                                 "pending incidents are being searched and published again")
        every = f"{purge_interval_s:.0f}"
        self._purge_outage = OutageLog(logger, f"closed incidents not purged (trying again every {every} s): %s",
                                       "closed incidents are being purged again")
        self._purged_at: float | None = None  # clock() of the last purge tried (None: purge on the next pass)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="match-incidents", daemon=True)

    def start(self) -> IncidentWorker:
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout_s: float = 15.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def run_once(self) -> int:
        """Close every due incident, then publish the outbox; return how many incidents were closed.

        Raises DependencyUnavailable (gallery), SQLAlchemyError (store), DeliveryFailed (broker)."""
        closed = 0
        for key in self.store.due(self.timeout_s):
            if self.store.close(key, self.build):
                closed += 1
                logger.info("incident %s searched", key)
        self.closed += closed
        self.publish()
        return closed

    def report(self) -> None:
        """Set the gauges: incidents waiting, and those due whose list is not published yet. After a good pass the
        overdue count is 0 but for incidents that fell due since; it stays up while passes fail (the gallery, the
        store or the broker down), which the RfrIncidentsOverdue alert watches. Raises SQLAlchemyError."""
        self.on_pending(self.store.open_count())
        self.on_overdue(self.store.overdue_count(self.timeout_s))

    def publish(self) -> None:
        while rows := self.store.pending_outbox():
            self.tracker.produce(Output(self.topics[r.topic], r.payload, key=r.key, event_id=r.event_id)
                                 for r in rows)
            self.tracker.flush(FLUSH_TIMEOUT_S)
            self.store.mark_published([r.id for r in rows])

    def tick(self) -> None:
        """One pass for the schedule; failures are logged once per outage and retried on the next pass."""
        try:
            self.run_once()
        except (DependencyUnavailable, SQLAlchemyError, DeliveryFailed) as exc:
            self._outage.failed(exc)
        else:
            self._outage.recovered()
        self._purge_quietly()
        self._report_quietly()

    def purge(self) -> int:
        """Purge closed incidents past ``retention_s`` unless the last try was under ``purge_interval_s`` ago (a
        full batch is followed by another on the next pass); return how many were purged. Raises SQLAlchemyError
        (tried again an interval later)."""
        now = self.clock()
        if self.retention_s is None or (self._purged_at is not None and now - self._purged_at < self.purge_interval_s):
            return 0
        self._purged_at = now
        purged = self.store.purge_closed(self.retention_s, PURGE_BATCH)
        if purged == PURGE_BATCH:
            self._purged_at = None  # more may be due: the next pass goes on
        if purged:
            self.on_purged(purged)
            logger.info("%d closed incident(s) purged (closed over %.0f s ago)", purged, self.retention_s)
        return purged

    def _purge_quietly(self) -> None:
        try:
            self.purge()
        except SQLAlchemyError as exc:
            self._purge_outage.failed(exc)
            return
        self._purge_outage.recovered()

    def _report_quietly(self) -> None:
        try:
            self.report()
        except SQLAlchemyError:  # the store itself is down: the gauges keep their last values; the pass logged it
            logger.debug("incident gauges not updated: the store is unavailable", exc_info=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_s)
            self._wake.clear()
            if not self._stop.is_set():
                try:
                    self.tick()
                except Exception:  # a bug must not end the thread: the incidents would wait forever
                    logger.exception("incident worker pass failed")
