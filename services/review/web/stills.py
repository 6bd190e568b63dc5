"""How the review service words what became of each still of an incident search (:class:`StillStatus`): one table,
used by the case page (Jinja filter ``still_status``, see :mod:`services.review.web.security`) and by the
disclosure pack's page and PDF (:mod:`services.review.web.search_facts`), so that they cannot say different
things."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, Final

from rfr.core.schemas import StillStatus

logger = logging.getLogger(__name__)

STILL_STATUS_WORDS: Final[Mapping[StillStatus, str]] = MappingProxyType({
    StillStatus.SEARCHED: "fused into the probe",
    StillStatus.NO_USABLE_FACE: "no usable face (not searched)",
    StillStatus.SEVERAL_FACES: "several faces (each searched on its own)",
    StillStatus.NOT_ARRIVED: "its face had not arrived when the incident was searched",
})
"""Each still status in words, as people read it."""


def still_status_words(status: object) -> str:
    """``status`` (a :class:`StillStatus` or its value, as a search's ``stills`` keep it) in words; a status this
    table does not know is shown as given."""
    try:
        return STILL_STATUS_WORDS[StillStatus(str(status))]
    except (ValueError, KeyError):
        logger.warning("a still status without words: %s", status)
        return str(status)


def incident_stills(stills: Iterable[Mapping[str, Any]]) -> list[str]:
    """Each still of a search (``SearchView.stills``) as ``<submission id>: <its status in words>``, in order."""
    return [f"{still.get('submission_id')}: {still_status_words(still.get('status'))}" for still in stills]
