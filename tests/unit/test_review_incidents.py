"""The review service and CandidateList v4: an incident's stills and the low-quality mark are kept, audited and
shown on the case page; a v3 list still reads as before."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from support.review_data import candidate_list, enrolment, open_store, unit
from support.review_pages import Pages, by_testid, pages_fixture

from rfr.core.db import sqlite_url
from rfr.core.schemas import CandidateList, ProbeStill, StillStatus, decode
from rfr.core.settings import MatchSettings
from rfr.review import tables as t
from rfr.review.research import re_search
from services.review.handler import CANDIDATE_LISTS


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
