"""Re-search of unsolved probes against new enrolments only (synthetic unit vectors, a SQLite review store): a
probe of a person not yet enrolled gets a case once that person is enrolled."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.review_data import ALICE, BOB, MODEL, Env, candidate_list, enrolment, labels, open_store, unit

from rfr.core.blobstore import FileBlobStore
from rfr.core.db import sqlite_url
from rfr.core.settings import MatchSettings, RetentionSettings
from rfr.review.research import re_search
from rfr.review.retention import run_retention

MATCH = MatchSettings(threshold=0.6, top_k=5, watch_lists=["custody", "wanted"])
SHOPLIFTER = unit((3, 1.0))  # the probe's person, not enrolled at first
LOOKALIKE = unit((3, 0.5), (4, 1.0))  # cosine 0.447 with the shoplifter: under the threshold
STRANGER = unit((7, 1.0))


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return open_store(sqlite_url(tmp_path / "review.db"))


def _unmatched_probe(env: Env, face_id: str = "sub_x:f0") -> None:
    assert env.store.record_search(candidate_list(face_id, [], template=SHOPLIFTER)) is None


def test_an_unmatched_probe_becomes_a_case_when_its_person_is_enrolled(env: Env) -> None:
    _unmatched_probe(env)
    change = enrolment("gc-book-1", [("gf-11", "shoplifter", unit((3, 1.0), (5, 0.2))),
                                     ("gf-12", "shoplifter", SHOPLIFTER), ("gf-13", "other", LOOKALIKE),
                                     ("gf-14", "nobody", STRANGER)])
    env.clock.advance(days=3)
    [found] = re_search(env.store, change, MATCH, env.clock.now)
    assert (found.trigger, found.re_search_of, found.event_id) == ("re_search", "gc-book-1", "sub_x:f0:rs:gc-book-1")
    assert [(c.rank, c.subject_id, c.gallery_face_id) for c in found.candidates] == [(1, "shoplifter", "gf-12")]
    assert found.candidates[0].score == pytest.approx(1.0)
    assert found.watch_lists == ["custody"] and found.model_id == MODEL and found.outcome == "candidates"
    assert found.meta.case_ref == "crime-1" and found.probe.template == candidate_list(
        "x", template=SHOPLIFTER).probe.template
    assert found.search_started_at == env.clock.now

    case_id = env.store.record_search(found)
    assert case_id is not None
    view = env.store.case(case_id, ALICE, "crime-1")
    assert view.search.trigger == "re_search" and view.candidates[0].subject_id == "shoplifter"
    assert env.store.record_search(found) is None  # a redelivered change makes no second case
    assert [q.case_id for q in env.store.queue()] == [case_id]


def test_only_new_photos_of_searched_watch_lists_and_the_same_model_count(env: Env) -> None:
    _unmatched_probe(env)
    photo = [("gf-21", "shoplifter", SHOPLIFTER)]
    assert re_search(env.store, enrolment("gc-a", photo, watch_list="civil"), MATCH, env.clock.now) == []
    assert re_search(env.store, enrolment("gc-b", photo, model_id="other-model"), MATCH, env.clock.now) == []
    assert re_search(env.store, enrolment("gc-c", [("gf-21", "shoplifter", None)], action="erased"), MATCH,
                     env.clock.now) == []
    assert re_search(env.store, enrolment("gc-d", [("gf-22", "nobody", STRANGER)]), MATCH, env.clock.now) == []
    [found] = re_search(env.store, enrolment("gc-e", photo, watch_list="wanted"), MATCH, env.clock.now)
    assert found.candidates[0].watch_list == "wanted"


def test_decided_and_purged_probes_are_not_searched_again(env: Env, tmp_path: Path) -> None:
    decided = env.store.record_search(candidate_list("sub_d:f0", template=SHOPLIFTER))
    assert decided is not None
    env.store.decide(decided, ALICE, labels(2), "crime-1")
    env.store.decide(decided, BOB, labels(2), "crime-1")
    _unmatched_probe(env, "sub_old:f0")
    run_retention(env.store, FileBlobStore(tmp_path / "blobs"), RetentionSettings(), env.clock.advance(days=32))
    assert re_search(env.store, enrolment("gc-f", [("gf-31", "shoplifter", SHOPLIFTER)]), MATCH,
                     env.clock.now) == []


def test_an_open_case_is_searched_again_without_the_subjects_it_shows(env: Env) -> None:
    case_id = env.store.record_search(candidate_list("sub_o:f0", [("shoplifter", 0.7)], template=SHOPLIFTER))
    assert case_id is not None
    env.store.decide(case_id, ALICE, labels(1), "crime-1")  # awaiting verification: still open
    same = enrolment("gc-g", [("gf-41", "shoplifter", SHOPLIFTER)])
    assert re_search(env.store, same, MATCH, env.clock.now) == []
    [found] = re_search(env.store, enrolment("gc-h", [("gf-41", "shoplifter", SHOPLIFTER),
                                                      ("gf-42", "twin", unit((3, 1.0), (9, 0.3)))]),
                        MATCH, env.clock.now)
    assert [c.subject_id for c in found.candidates] == ["twin"]


def test_top_k_and_threshold_of_the_match_settings_apply(env: Env) -> None:
    _unmatched_probe(env)
    faces = [(f"gf-5{i}", f"s{i}", unit((3, 1.0), (10 + i, 0.1 * i))) for i in range(5)]
    [found] = re_search(env.store, enrolment("gc-i", faces), MatchSettings(threshold=0.9, top_k=2,
                                                                            watch_lists=["custody"]), env.clock.now)
    assert [c.subject_id for c in found.candidates] == ["s0", "s1"]
    assert [c.rank for c in found.candidates] == [1, 2] and found.threshold == 0.9 and found.top_k == 2
