"""The cluster pages through FastAPI's TestClient on a real SQLite review store: the list (pending first, counts,
stores), a cluster's sightings side by side with the not-an-identification notice, split / confirm / dismiss as
form posts (CSRF, audited), the on-demand search of the custody gallery (a fake Milvus gallery), the roles; and the
review handler recording ClusterEvents from the clusters topic."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from support.cluster_data import STRANGER, cluster_event, offender_cluster, sighting, unknown_probe
from support.kafka import FakeMsg
from support.review_data import BOB, MODEL, enrolment, unit
from support.review_pages import PASSWORD, Pages, by_testid, csrf_of, make_pages

from rfr.core.review_messages import GalleryChange
from rfr.core.settings import MatchSettings, ReviewSettings, Settings
from rfr.core.stream import PoisonMessage
from rfr.core.topics import Topics
from rfr.gallery.base import GalleryFace
from rfr.gallery.memory import InMemoryGallery
from rfr.review.research import re_search_clusters
from services.review import routes_clusters
from services.review.handler import ReviewHandler

MATCH = MatchSettings(threshold=0.6, top_k=5, watch_lists=["custody"])


@pytest.fixture
def pages(tmp_path: Path) -> Iterator[Pages]:
    out = make_pages(tmp_path, Settings(match=MATCH))
    yield out
    out.env.store.engine.dispose()


@pytest.fixture
def gallery(monkeypatch: pytest.MonkeyPatch) -> InMemoryGallery:
    made = InMemoryGallery(MODEL)
    made.add([GalleryFace("gf-o", "offender", "custody", unit((3, 1.0), (6, 0.2))),
              GalleryFace("gf-s", "stranger", "custody", STRANGER)])
    monkeypatch.setattr(routes_clusters, "open_gallery_searcher", lambda settings: made)
    return made


def _post(client: TestClient, url: str, page_url: str, **data: str) -> Response:
    """Post a form of ``page_url`` (its CSRF token read off the page) to ``url``."""
    token = csrf_of(client.get(page_url).text)
    resp: Response = client.post(url, data={"csrf": token, **data})
    return resp


def test_the_list_shows_pending_clusters_first_with_their_spread(pages: Pages) -> None:
    env = pages.env
    env.store.record_cluster(offender_cluster(env, "cl-old"))
    env.store.dismiss_cluster("cl-old", BOB, "not one person")
    env.store.record_cluster(offender_cluster(env, "cl-new", faces=4))
    alice = pages.sign_in("alice")
    html = alice.get("/clusters").text
    assert html.index('data-cluster-id="cl-new"') < html.index('data-cluster-id="cl-old"')
    assert by_testid(html, "sighting-count") == ["4", "3"]
    assert by_testid(html, "count-pending") == ["1"] and by_testid(html, "count-dismissed") == ["1"]
    assert 'data-testid="nav-clusters"' in html and 'data-testid="cluster-notice"' in html
    assert "shop-1/store-3" in html
    filtered = alice.get("/clusters?status=dismissed").text
    assert 'data-cluster-id="cl-old"' in filtered and 'data-cluster-id="cl-new"' not in filtered


def test_a_reviewer_splits_then_confirms_and_the_auditor_only_sees(pages: Pages) -> None:
    env = pages.env
    event = offender_cluster(env)
    unknown_probe(env, "sub_other:f0", STRANGER)
    env.store.record_cluster(cluster_event("cl-1", 1, [*event.sightings, sighting("sub_other:f0", "store-5")]))
    alice = pages.sign_in("alice")
    page = alice.get("/clusters/cl-1").text
    assert page.count('data-testid="sighting"') == 4
    assert page.count('src="/clusters/cl-1/crop?face=') == 4 and 'data-testid="cluster-notice"' in page
    crop = alice.get("/clusters/cl-1/crop", params={"face": "sub_other:f0"})
    assert crop.status_code == 200 and crop.content.startswith(b"\xff\xd8")
    assert alice.get("/clusters/cl-1/crop", params={"face": "nobody"}).status_code == 404

    resp = _post(alice, "/clusters/cl-1/split", "/clusters/cl-1", face="sub_other:f0", reason="a different person")
    assert resp.status_code == 303 and resp.headers["location"] == "/clusters/cl-1?done=split"
    after = alice.get("/clusters/cl-1").text
    assert 'data-left="split"' in after and by_testid(after, "cluster-status") == ["pending"]
    resp = _post(alice, "/clusters/cl-1/confirm", "/clusters/cl-1", reason="same face at three stores")
    assert resp.status_code == 303
    assert by_testid(alice.get("/clusters/cl-1").text, "cluster-status") == ["confirmed"]
    no_token = alice.post("/clusters/cl-1/dismiss", data={"reason": "x"})
    assert no_token.status_code == 403

    audrey = pages.sign_in("audrey")
    seen = audrey.get("/clusters/cl-1").text
    assert 'data-testid="confirm-form"' not in seen and 'data-testid="search-form"' not in seen
    refused = _post(audrey, "/clusters/cl-1/dismiss", "/clusters/cl-1", reason="no")
    assert refused.status_code == 403
    assert pages.sign_in("root").get("/clusters").status_code == 403  # administrators see no faces
    actions = env.actions()
    assert actions.count("cluster_split") == 1 and actions.count("cluster_confirmed") == 1
    assert "cluster_dismissed" not in actions and actions.count("cluster_view") >= 5


@pytest.mark.parametrize("show", [True, False])
def test_the_similarity_to_the_cluster_is_shown_only_with_scores(tmp_path: Path, show: bool) -> None:
    made = make_pages(tmp_path, Settings(match=MATCH, review=ReviewSettings(show_scores=show)))
    made.env.store.record_cluster(offender_cluster(made.env))
    page = made.sign_in("alice").get("/clusters/cl-1").text
    assert page.count('data-testid="sighting"') == 3
    assert page.count("similarity to the cluster") == (3 if show else 0)
    made.env.store.engine.dispose()


@pytest.mark.parametrize("hubness_k", [0, 20])
def test_the_rule_says_when_its_thresholds_are_hubness_corrected(tmp_path: Path, hubness_k: int) -> None:
    made = make_pages(tmp_path, Settings(match=MATCH))
    event = offender_cluster(made.env)
    rule = event.rule.model_copy(update={"link_threshold": 0.28, "merge_threshold": 0.28, "hubness_k": hubness_k,
                                         "cohort_sha256": "ab12" * 16 if hubness_k else ""})
    made.env.store.record_cluster(event.model_copy(update={"rule": rule}))
    (text,) = by_testid(made.sign_in("alice").get("/clusters/cl-1").text, "rule")
    assert "similarity of 0.28 or more" in text if hubness_k else "similarity 0.28 or more" in text
    assert ("k = 20" in text and "cohort ab12ab12ab12)" in text and "plain, uncorrected cosines" in text) == bool(
        hubness_k)
    made.env.store.engine.dispose()


def test_a_refused_step_answers_with_the_error_page(pages: Pages) -> None:
    pages.env.store.record_cluster(offender_cluster(pages.env))
    alice = pages.sign_in("alice")
    resp = _post(alice, "/clusters/cl-1/confirm", "/clusters/cl-1", reason="  ")
    assert resp.status_code == 422 and "Reason needed" in resp.text
    assert alice.get("/clusters/cl-none").status_code == 404


def test_the_on_demand_search_shows_possible_candidates_not_an_identification(pages: Pages,
                                                                              gallery: InMemoryGallery) -> None:
    pages.env.store.record_cluster(offender_cluster(pages.env))
    alice = pages.sign_in("alice")
    assert 'data-testid="search-form"' not in alice.get("/clusters/cl-1").text  # pending: not searched yet
    assert _post(alice, "/clusters/cl-1/search", "/clusters/cl-1", reason="CR-5").status_code == 409
    pages.env.store.confirm_cluster("cl-1", BOB, "one person")
    resp = _post(alice, "/clusters/cl-1/search", "/clusters/cl-1", reason="CR-5")
    assert resp.status_code == 303
    html = alice.get("/clusters/cl-1?done=searched").text
    assert by_testid(html, "cluster-candidate")[0].startswith("offender (custody)")
    assert 'data-testid="candidates-notice"' in html and "not an identification" in html
    assert gallery.search_calls == 1
    listed = alice.get("/clusters").text
    assert by_testid(listed, "found") == ["possible candidates found"]


def test_the_search_says_when_the_gallery_cannot_be_reached(pages: Pages, monkeypatch: pytest.MonkeyPatch) -> None:
    from rfr.gallery.base import GalleryUnavailableError

    def down(settings: Settings) -> InMemoryGallery:
        raise GalleryUnavailableError("Milvus at http://127.0.0.1:1: refused")

    monkeypatch.setattr(routes_clusters, "open_gallery_searcher", down)
    pages.env.store.record_cluster(offender_cluster(pages.env))
    pages.env.store.confirm_cluster("cl-1", BOB, "one person")
    alice = pages.sign_in("alice")
    resp = _post(alice, "/clusters/cl-1/search", "/clusters/cl-1", reason="CR-5")
    assert resp.status_code == 503 and "Gallery unavailable" in resp.text
    assert "cluster_re_search" not in pages.env.actions()


def test_a_dismissed_cluster_that_grows_says_it_was_not_reopened(pages: Pages) -> None:
    env = pages.env
    event = offender_cluster(env)
    env.store.record_cluster(event)
    env.store.dismiss_cluster("cl-1", BOB, "not worth it")
    unknown_probe(env, "sub_new:f0")
    env.store.record_cluster(cluster_event("cl-1", 2, [*event.sightings, sighting("sub_new:f0", "store-8")]))
    html = pages.sign_in("alice").get("/clusters/cl-1").text
    assert 'data-testid="after-dismissal"' in html and "It stays dismissed" in html
    assert by_testid(html, "cluster-status") == ["dismissed"] and 'data-testid="new-sighting"' in html


# --- the stream handler -----------------------------------------------------------------------------------------
def test_the_handler_records_cluster_events_and_searches_confirmed_clusters_after_an_enrolment(pages: Pages) -> None:
    env, topics = pages.env, Topics("t")
    searched: list[int] = []

    def search_clusters(change: GalleryChange) -> int:
        searched.append(re_search_clusters(env.store, change, MATCH))
        return searched[-1]

    handler = ReviewHandler(env.store, topics, re_search_clusters=search_clusters)
    event = offender_cluster(env)
    [result] = handler.handle_batch([FakeMsg(event.to_bytes(), topic=topics.clusters)])  # type: ignore[list-item]
    assert result == [] and env.store.cluster_counts()["pending"] == 1
    handler.handle_batch([FakeMsg(event.to_bytes(), topic=topics.clusters)])  # type: ignore[list-item]
    assert env.actions().count("cluster_reported") == 1
    [bad] = handler.handle_batch([FakeMsg(b'{"schema_version": 1}', topic=topics.clusters)])  # type: ignore[list-item]
    assert isinstance(bad, PoisonMessage)
    env.store.confirm_cluster("cl-1", BOB, "one person")
    change = enrolment("gc-1", [("gf-1", "offender", unit((3, 1.0)))])
    handler.handle_batch([FakeMsg(change.to_bytes(), topic=topics.gallery)])  # type: ignore[list-item]
    assert searched == [1] and env.store.cluster("cl-1", BOB).searches[0].candidates



# --- the JSON API -----------------------------------------------------------------------------------------------
def _token(pages: Pages, name: str) -> dict[str, str]:
    resp = pages.browser().post("/v1/login", json={"name": name, "password": PASSWORD})
    assert resp.status_code == 200, resp.text
    return {"Authorization": f"Bearer {resp.json()['token']}"}


def test_the_api_lists_shows_splits_confirms_and_searches_clusters(pages: Pages, gallery: InMemoryGallery) -> None:
    event = offender_cluster(pages.env)
    unknown_probe(pages.env, "sub_other:f0", STRANGER)
    pages.env.store.record_cluster(cluster_event("cl-1", 1, [*event.sightings, sighting("sub_other:f0", "store-5")]))
    api, alice, audrey = pages.browser(), _token(pages, "alice"), _token(pages, "audrey")
    [row] = api.get("/v1/clusters", headers=audrey).json()
    assert (row["cluster_id"], row["sightings"], row["status"]) == ("cl-1", 4, "pending")
    shown = api.get("/v1/clusters/cl-1", params={"reason": "CR-3"}, headers=audrey).json()
    assert len(shown["sightings"]) == 4 and "not an identification" in shown["notice"]
    assert api.post("/v1/clusters/cl-1/confirm", json={"reason": "x"}, headers=audrey).status_code == 403
    missing = api.get("/v1/clusters/cl-none", params={"reason": "CR-3"}, headers=alice)
    assert missing.status_code == 404 and missing.json()["detail"]["reason"] == "cluster_not_found"
    split = api.post("/v1/clusters/cl-1/split", json={"reason": "another person", "face_ids": ["sub_other:f0"]},
                     headers=alice).json()
    assert split["summary"]["sightings"] == 3
    early = api.post("/v1/clusters/cl-1/search", json={"reason": "CR-3"}, headers=alice)
    assert early.status_code == 409 and early.json()["detail"]["reason"] == "wrong_state"
    assert api.post("/v1/clusters/cl-1/confirm", json={"reason": "one person"}, headers=alice).json()[
        "summary"]["status"] == "confirmed"
    found = api.post("/v1/clusters/cl-1/search", json={"reason": "CR-3"}, headers=alice).json()
    assert [c["subject_id"] for c in found["candidates"]] == ["offender"] and "not an identification" in found["notice"]
    assert pages.env.actions().count("cluster_re_search") == 1
