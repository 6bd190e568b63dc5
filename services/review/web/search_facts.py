"""The facts of a case's search as the disclosure pack states them: labelled rows in order, each in its words. One
list, set out by the printable pack (``disclosure.html``, given it as ``search_facts``) and by its PDF
(:mod:`services.review.web.disclosure_pdf`), so that the two cannot say different things about a search."""

from __future__ import annotations

from typing import NamedTuple

from rfr.review.views import SearchView
from services.review.web.paging import show_time
from services.review.web.stills import incident_stills

LOW_QUALITY = "low: an investigative search of a face the quality gate stopped"
PASSED_GATE = "passed the quality gate"


def score_scale(search: SearchView) -> str:
    """The scale of the search's threshold and candidate scores: cosines, or CSLS scores under
    ``match.score_norm=hubness`` (docs/calibration.md)."""
    return "CSLS: 2 x cosine - hubness" if search.score_norm == "hubness" else "cosine"


class Fact(NamedTuple):
    """One labelled row: ``testid`` names the value on the page (tests find it by it), ``code`` sets it as code."""

    label: str
    value: str
    testid: str | None = None
    code: bool = False


def threshold_policy_words(search: SearchView) -> str | None:
    """How the threshold was set (policy, gallery size, score normalisation); None for a search recorded before
    CandidateList v4, which did not say."""
    if not search.threshold_policy:
        return None
    size = f" (gallery of {search.gallery_size} faces)" if search.gallery_size is not None else ""
    return f"{search.threshold_policy}{size}; score normalisation {search.score_norm or 'none'}"


def probe_quality_words(search: SearchView) -> str:
    """Whether the probe passed the quality gate, or was searched on request although the gate stopped it."""
    return LOW_QUALITY if search.low_quality else PASSED_GATE


def search_facts(search: SearchView) -> list[Fact]:
    """Every fact of ``search`` the pack states, in order; the threshold policy and the incident only when known."""
    re_search = f" (re-search after gallery change {search.re_search_of})" if search.re_search_of else ""
    facts = [Fact("Watch-lists searched", ", ".join(search.watch_lists)),
             Fact(f"Threshold ({score_scale(search)})", str(search.threshold)),
             Fact("Candidates asked (top k)", str(search.top_k)),
             Fact("Model", search.model_id),
             Fact("Started / ended", f"{show_time(search.started_at)} / {show_time(search.searched_at)}"),
             Fact("Trigger", f"{search.trigger}{re_search}"),
             Fact("Search event", search.event_id, code=True)]
    policy = threshold_policy_words(search)
    if policy is not None:
        facts.append(Fact("Threshold policy", policy, "pack-threshold-policy"))
    facts.append(Fact("Probe quality", probe_quality_words(search), "pack-low-quality"))
    if search.incident_id:  # the probe fused the faces of several stills: name each and what became of it
        stills = "; ".join(incident_stills(search.stills)) or "none recorded"
        facts.append(Fact("Incident", f"{search.incident_id}: stills {stills}", "pack-incident"))
    return facts
