"""Claims: a case is taken by one reviewer at a time.

Opening a case from the queue takes it (:meth:`Claims.claim`) for ``minutes``; opening it again renews the claim.
While another reviewer's claim is live, the store refuses their decision, verification, resolution or escalation
(:class:`rfr.review.workflow.CaseClaimed`, HTTP 409 ``claimed``); a decision or escalation ends the taker's claim,
and :meth:`Claims.release` gives a case back. A claim past ``claimed_until`` is free for anyone. Claims are working
state, not a record: they are not audited (the view that made the claim is).

One person holds at most :data:`MAX_CLAIMS` live claims (on open cases), so nobody can take the whole queue by
opening every case: opening another case then shows it without taking it (``ClaimResult.limit_reached``); it stays
free for others until the person decides, releases or lets one of their claims lapse.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Row, func, select, update

from rfr.review import tables as t
from rfr.review import workflow as wf
from rfr.review.cases import CaseReader
from rfr.review.views import ClaimResult

logger = logging.getLogger(__name__)

MAX_CLAIMS = 3
"""Most live claims one person holds at once."""
FREE: dict[str, Any] = {"claimed_by": None, "claimed_until": None}
"""Column values of a case nobody has taken (merge into the update of a decision)."""


def live_claim(case: Row[Any], now: datetime) -> tuple[str | None, datetime | None]:
    """(holder, until) of the case row's claim when it is live at ``now``, else (None, None)."""
    if case.claimed_by is not None and case.claimed_until is not None and case.claimed_until > now:
        return case.claimed_by, case.claimed_until
    return None, None


class Claims:
    """Taking and giving back cases (a mixin of :class:`rfr.review.store.ReviewStore`)."""

    engine: Engine
    clock: Callable[[], datetime]

    def claim(self, case_id: int, actor: wf.Actor, minutes: float) -> ClaimResult:
        """Take (or renew) the case for ``minutes`` unless another's claim is live, ``actor`` has no step to take
        on it (a decided case, one's own decision awaiting a verifier...), or already holds :data:`MAX_CLAIMS` other
        live claims (``limit_reached``): then ``taken`` is False and ``claimed_by`` names the holder, if any.
        Raises CaseNotFound, NotPermitted (a role that never decides)."""
        wf.require_role(actor, wf.DECIDING_ROLES, "take a case")
        with self.engine.begin() as conn:
            case = CaseReader.lock_case(conn, case_id)
            now = self.clock()
            holder, until = live_claim(case, now)
            if holder is not None and holder != actor.name:
                return ClaimResult(False, holder, until)
            if not wf.can_take(case.state, actor, CaseReader.prior_decisions(conn, case_id)):
                if holder is not None:  # one's own claim on a case one can no longer act on
                    _free(conn, case_id)
                return ClaimResult(False, None, None)
            if holder is None and _held(conn, actor.name, case_id, now) >= MAX_CLAIMS:
                logger.info("case %s not taken: %s already holds %d cases", case_id, actor.name, MAX_CLAIMS)
                return ClaimResult(False, None, None, limit_reached=True)
            until = now + timedelta(minutes=minutes)
            conn.execute(update(t.cases).where(t.cases.c.id == case_id)
                         .values(claimed_by=actor.name, claimed_until=until))
            logger.debug("case %s taken by %s until %s", case_id, actor.name, until)
            return ClaimResult(True, actor.name, until)

    def release(self, case_id: int, actor: wf.Actor) -> bool:
        """Give the case back; False when ``actor`` did not hold a live claim on it. Raises CaseNotFound."""
        with self.engine.begin() as conn:
            case = CaseReader.lock_case(conn, case_id)
            holder, _ = live_claim(case, self.clock())
            if holder != actor.name:
                return False
            _free(conn, case_id)
            return True


def _free(conn: Connection, case_id: int) -> None:
    conn.execute(update(t.cases).where(t.cases.c.id == case_id).values(**FREE))


def _held(conn: Connection, name: str, other_than: int, now: datetime) -> int:
    """Live claims ``name`` holds on open cases other than ``other_than``."""
    cs = t.cases
    return int(conn.execute(select(func.count()).select_from(cs).where(
        cs.c.claimed_by == name, cs.c.claimed_until > now, cs.c.id != other_than,
        cs.c.state.in_([s.value for s in wf.OPEN_STATES]))).scalar_one())
