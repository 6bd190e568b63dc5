"""The review service and CandidateList v4: an incident's stills and the low-quality mark are kept, audited and
shown on the case page and in the disclosure pack (page and PDF, in the same words); a v3 list still reads as
before. The pack's page and PDF state the same facts of a search (threshold policy, probe quality, incident)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from support.pdfs import pdf_text
from support.review_data import ALICE, BOB, SUE, candidate_list, enrolment, labels, open_store, unit
from support.review_pages import Pages, by_testid, pages_fixture

from rfr.core.db import sqlite_url
from rfr.core.schemas import CandidateList, ProbeStill, StillStatus, decode
from rfr.core.settings import MatchSettings
from rfr.review import disclosure as dc
from rfr.review import tables as t
from rfr.review.research import re_search
from services.review.handler import CANDIDATE_LISTS
from services.review.web.disclosure_pdf import pack_pdf
from services.review.web.stills import still_status_words

WORDS = {"searched": "fused into the probe", "no_usable_face": "no usable face (not searched)",
         "several_faces": "several faces (each searched on its own)",
         "not_arrived": "its face had not arrived when the incident was searched"}
"""What people read for each still status, on the case page, the pack's page and its PDF."""
EVERY_STATUS = [ProbeStill(submission_id=f"sub_{s.value}", face_id=f"sub_{s.value}:f0" if s == "searched" else None,
                           status=s) for s in StillStatus]


@pytest.fixture
def pages(tmp_path: Path) -> Iterator[Pages]:
    yield from pages_fixture(tmp_path)


def incident_list(**kw: Any) -> CandidateList:
    base = candidate_list("inc_0123", event_id="inc_0123")
    stills = [ProbeStill(submission_id=f"sub_{i}", face_id=f"sub_{i}:f0", status=StillStatus.SEARCHED)
              for i in range(3)] + [ProbeStill(submission_id="sub_3", face_id=None,
                                               status=StillStatus.NO_USABLE_FACE)]
    return base.model_copy(update={"incident_id": "inc-1", "stills": stills, "stills_expected": 4} | kw)


def test_the_review_service_reads_v3_and_v4_lists() -> None:
    v3 = json.loads(candidate_list("sub_a:f0").to_bytes())
    v3["schema_version"] = 3
    old = decode(CandidateList, json.dumps(v3), accepts=CANDIDATE_LISTS)
    assert old.schema_version == 3 and not old.low_quality and old.incident_id is None
    assert [s.submission_id for s in old.probe_stills] == ["sub_a"]  # a v3 list names its one still
    v3["low_quality"] = True
    with pytest.raises(ValueError, match="v3 cannot carry"):
        decode(CandidateList, json.dumps(v3), accepts=CANDIDATE_LISTS)
    assert decode(CandidateList, incident_list().to_bytes(), accepts=CANDIDATE_LISTS).incident_id == "inc-1"


def test_the_case_page_names_the_incident_stills(pages: Pages) -> None:
    case_id = pages.env.store.record_search(incident_list())
    assert case_id is not None
    html = pages.open_case(pages.sign_in("alice"), case_id).text
    assert by_testid(html, "incident-id") == ["inc-1"]
    assert html.count('data-testid="incident-still"') == 4 and 'data-status="no_usable_face"' in html
    assert 'data-testid="investigative-warning"' not in html
    with pages.env.store.engine.connect() as conn:
        row = conn.execute(select(t.searches).where(t.searches.c.event_id == "inc_0123")).one()
    assert row.incident_id == "inc-1" and len(json.loads(row.stills)) == 4 and not row.low_quality


def test_a_low_quality_list_makes_a_case_with_a_clear_warning(pages: Pages) -> None:
    cl = candidate_list("sub_q:f0").model_copy(update={"low_quality": True})
    case_id = pages.env.store.record_search(cl)
    assert case_id is not None  # never silently dropped
    html = pages.open_case(pages.sign_in("alice"), case_id).text
    assert 'data-testid="investigative-warning"' in html and "quality gate stopped this face" in html
    plain = pages.env.store.record_search(candidate_list("sub_r:f0"))
    assert plain is not None
    assert 'data-testid="investigative-warning"' not in pages.open_case(pages.sign_in("bob"), plain).text


def test_a_re_search_keeps_the_low_quality_mark_and_the_incident(tmp_path: Path) -> None:
    env = open_store(sqlite_url(tmp_path / "review.db"))
    probe = unit((3, 1.0))
    first = incident_list(low_quality=True).model_copy(update={"candidates": [], "outcome": "no_candidate"})
    first = first.model_copy(update={"probe": candidate_list("x", template=probe).probe})
    assert env.store.record_search(first) is None  # unmatched, kept for re-search
    env.store.record_search(candidate_list("sub_plain:f0", [], template=probe))
    change = enrolment("gc-1", [("gf-1", "shoplifter", probe)])
    found = {cl.face_id: cl for cl in re_search(env.store, change, MatchSettings(threshold=0.6), env.clock.now)}
    assert found["inc_0123"].low_quality and found["inc_0123"].incident_id == "inc-1"
    assert len(found["inc_0123"].stills) == 4
    assert not found["sub_plain:f0"].low_quality and found["sub_plain:f0"].incident_id is None


def decided(pages: Pages, cl: CandidateList) -> int:
    """A case of ``cl`` decided (a lead on rank 1, confirmed), so that its disclosure pack can be exported."""
    case_id = pages.env.store.record_search(cl)
    assert isinstance(case_id, int)
    for who in (ALICE, BOB):
        pages.env.store.decide(case_id, who, labels(2, lead=1), "crime-1")
    return case_id


def test_every_still_status_has_its_words_and_an_unknown_one_shows_as_given() -> None:
    assert {s.value: still_status_words(s) for s in StillStatus} == WORDS
    assert {s: still_status_words(s) for s in WORDS} == WORDS  # as a search's stills keep them: plain strings
    assert still_status_words("lost_in_transit") == "lost_in_transit"


def test_the_disclosure_pdf_names_the_incident_and_each_still_in_words(pages: Pages) -> None:
    case_id = decided(pages, incident_list(stills=EVERY_STATUS))
    pack = dc.gather(pages.env.store, pages.ctx.blobs, case_id, SUE, "CPS request 90", "pdf")
    assert pack.case.search.incident_id == "inc-1"
    text = pdf_text(pack_pdf(pack))
    assert "Incident inc-1: stills sub_searched: fused into the probe; sub_no_usable_face: " in text
    for status, words in WORDS.items():
        assert f"sub_{status}: {words}" in text, status


def test_the_pages_word_the_incident_stills_as_the_pdf_does(pages: Pages) -> None:
    case_id = decided(pages, incident_list(stills=EVERY_STATUS))
    lines = [f"sub_{s.value}: {WORDS[s.value]}" for s in StillStatus]
    sue = pages.sign_in("sue")
    pack = sue.get(f"/cases/{case_id}/disclosure", params={"reason": "CPS request 91"})
    assert pack.status_code == 200
    assert by_testid(pack.text, "pack-incident") == ["inc-1: stills " + "; ".join(lines)]
    assert by_testid(pages.open_case(sue, case_id).text, "incident-still") == lines


def test_a_search_of_one_still_has_no_incident_in_the_pack(pages: Pages) -> None:
    case_id = decided(pages, candidate_list("sub_one:f0"))
    pack = dc.gather(pages.env.store, pages.ctx.blobs, case_id, SUE, "CPS request 92", "pdf")
    assert pack.case.search.incident_id is None and len(pack.case.search.stills) == 1  # its one still, no incident
    text = pdf_text(pack_pdf(pack))
    assert "Search event sub_one:f0" in text and "Incident" not in text and "Stills of the incident" not in text
    page = pages.sign_in("sue").get(f"/cases/{case_id}/disclosure", params={"reason": "CPS request 93"}).text
    assert 'data-testid="pack-search"' in page and 'data-testid="pack-incident"' not in page


def page_rows(html: str, testid: str) -> list[tuple[str, str]]:
    """The (label, value) rows of the page's ``<dl data-testid=testid>`` as people read them (tags dropped)."""
    dl = re.search(rf'<dl[^>]*data-testid="{re.escape(testid)}"[^>]*>(.*?)</dl>', html, re.S)
    assert dl, f"no {testid} on the page"

    def read(part: str) -> str:
        return " ".join(unescape(re.sub(r"<[^>]+>", "", part)).split())

    return [(read(dt), read(dd)) for dt, dd in re.findall(r"<dt>(.*?)</dt>\s*<dd[^>]*>(.*?)</dd>", dl.group(1), re.S)]


FOOTER = re.compile(r" ?Case \d+ - disclosure pack - a candidate list is never an identification - page \d+(?:/\d+)?")
GATED = "Probe quality low: an investigative search of a face the quality gate stopped"
PASSED = "Probe quality passed the quality gate"


@pytest.mark.parametrize(("cl", "shown", "absent"), [
    pytest.param(candidate_list("sub_lq:f0", trigger="re_search", re_search_of="gc-7").model_copy(update={
        "low_quality": True, "threshold_policy": "gallery_size", "gallery_size": 1200, "score_norm": "cohort"}),
        [GATED, "Threshold policy gallery_size (gallery of 1200 faces); score normalisation cohort",
         "Trigger re_search (re-search after gallery change gc-7)"], {"Incident"},
        id="investigative-gallery-size-cohort"),
    pytest.param(incident_list(low_quality=True, gallery_size=40),
                 [GATED, "Threshold policy fixed (gallery of 40 faces); score normalisation none",
                  "Incident inc-1: stills sub_0: fused into the probe; sub_1: fused into the probe; sub_2: fused into "
                  "the probe; sub_3: no usable face (not searched)"], set(), id="investigative-incident"),
    pytest.param(candidate_list("sub_v4:f0"), [PASSED, "Threshold policy fixed; score normalisation none"],
                 {"Incident"}, id="v4-defaults"),
    pytest.param(candidate_list("sub_h:f0").model_copy(update={"score_norm": "hubness"}),
                 [PASSED, "Threshold policy fixed; score normalisation hubness"], {"Incident"}, id="v4-hubness"),
    pytest.param(candidate_list("sub_v3:f0").model_copy(update={"threshold_policy": None, "score_norm": None}),
                 [PASSED], {"Threshold policy", "Incident"}, id="before-v4-no-policy"),
])
def test_the_pack_page_and_pdf_state_the_same_search_facts(pages: Pages, cl: CandidateList, shown: list[str],
                                                          absent: set[str]) -> None:
    case_id = decided(pages, cl)
    sue = pages.sign_in("sue")
    html = sue.get(f"/cases/{case_id}/disclosure", params={"reason": "CPS request 94"})
    pdf = sue.get(f"/cases/{case_id}/disclosure.pdf", params={"reason": "CPS request 95"})
    assert html.status_code == pdf.status_code == 200
    rows = page_rows(html.text, "pack-search")
    facts = " ".join(f"{label} {value}" for label, value in rows)
    text = FOOTER.sub("", pdf_text(pdf.content))
    # every row of the page, in its order and words, and nothing else, between the PDF's Search and Candidates
    assert f" Search {facts} Candidates (2)" in text, text
    for line in shown:
        assert line in facts and line in text, line
    labels = {label for label, _ in rows}
    scale = "CSLS: 2 x cosine - hubness" if cl.score_norm == "hubness" else "cosine"  # the scores' scale, named
    assert {"Watch-lists searched", f"Threshold ({scale})", "Model", "Probe quality", "Search event"} <= labels
    assert html.text.count(f"score ({scale})") == text.count(f"Score ({scale}):") == 2  # each candidate's
    case_page = pages.open_case(pages.sign_in("alice"), case_id, "crime-1").text
    assert f"threshold {cl.threshold} ({scale});" in case_page  # the case page names the scale as well
    [(_, final)] = [(i, e) for i, e in pages.env.store.decisions_since(0) if e.case_id == case_id]
    assert final.score_norm == (cl.score_norm or "none")  # case systems told the lead's score's scale too
    assert not absent & labels and all(f" {label} " not in text for label in absent)


def test_the_queue_marks_a_top_score_on_the_csls_scale(pages: Pages) -> None:
    hub = pages.env.store.record_search(candidate_list("sub_hq:f0").model_copy(update={"score_norm": "hubness"}))
    plain = pages.env.store.record_search(candidate_list("sub_pq:f0"))
    queue = pages.sign_in("alice").get("/queue").text
    assert f'data-testid="open-case-{hub}"' in queue and f'data-testid="open-case-{plain}"' in queue
    assert f'data-testid="csls-{hub}"' in queue and f'data-testid="csls-{plain}"' not in queue
