"""The review API through FastAPI's TestClient on a real SQLite review store: roles on every endpoint, the
two-person flow, refusals as HTTP statuses, images, audit query and export, administration."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from sqlalchemy.exc import OperationalError
from support.metrics import sample
from support.review_data import ADMIN, Env, candidate_list, open_store
from support.review_pages import api_context, users_of
from support.stills import jpeg

from rfr.core.blobstore import FileBlobStore
from rfr.core.db import sqlite_url
from rfr.core.settings import RetentionSettings
from rfr.review.users import Role
from services.review.app import create_app
from services.review.context import ApiContext
from services.review.jobs import RetentionJob
from services.review.metrics import ReviewMetrics

PASSWORD = "a long enough password"
RETAILER_KEY = "rfr_retailer-key-0123456789abcdef0123456789"
PEOPLE = {"alice": Role.REVIEWER, "bob": Role.REVIEWER, "sue": Role.SUPERVISOR, "sam": Role.SUPERVISOR,
          "audrey": Role.AUDITOR, "root": Role.ADMINISTRATOR}
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


@dataclass
class Api:
    client: TestClient
    env: Env
    ctx: ApiContext
    registry: CollectorRegistry
    tokens: dict[str, str]
    finals: list[int] = field(default_factory=list)

    def h(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def new_case(self, face_id: str, **kw: Any) -> int:
        case_id = self.env.store.record_search(candidate_list(face_id, **kw))
        assert case_id is not None
        return case_id

    def decide(self, who: str, case_id: int, lead: int | None, path: str = "decisions", count: int = 2) -> Any:
        labels = [{"rank": r, "label": "possible_match" if r == lead else "not_match", "note": f"looked at {r}"}
                  for r in range(1, count + 1)]
        return self.client.post(f"/v1/cases/{case_id}/{path}", headers=self.h(who),
                                json={"labels": labels, "reason": "crime-1", "note": "checked"})


@pytest.fixture
def api(tmp_path: Path, registry: CollectorRegistry) -> Iterator[Api]:
    env = open_store(sqlite_url(tmp_path / "review.db"))
    users = users_of(env, PEOPLE, PASSWORD)
    blobs = FileBlobStore(tmp_path / "blobs")
    metrics = ReviewMetrics.create(registry)
    retention = RetentionJob(env.store, blobs, RetentionSettings(), metrics, clock=env.clock)
    ctx = api_context(env, users, blobs, retention=retention.status, metrics=metrics,
                      photos=FileBlobStore(tmp_path / "blobs" / "gallery"))
    out = Api(TestClient(create_app(ctx)), env, ctx, registry, {})
    ctx.on_final = lambda: out.finals.append(1)
    out.tokens = {name: users.issue_session(users.authenticate(name, PASSWORD) or ADMIN) for name in PEOPLE}
    out.tokens["cms"] = users.create_token("cms", Role.CASE_SYSTEM, by=ADMIN)
    yield out
    env.store.engine.dispose()


def routes(api: Api) -> list[tuple[str, str]]:
    """(method, concrete path) of every documented route but login."""
    out = []
    for path, ops in api.client.get("/openapi.json").json()["paths"].items():
        if path == "/v1/login":
            continue
        concrete = (path.replace("{case_id}", "1").replace("{gallery_face_id}", "gf-subj-1")
                    .replace("{cluster_id}", "cl-1"))
        out += [(method.upper(), concrete) for method in sorted(ops)]
    return out


def call(api: Api, method: str, path: str, headers: dict[str, str]) -> Any:
    body = {"labels": [{"rank": 1, "label": "not_match", "note": "nope"}], "note": "n/a", "reason": "r-1"}
    if path.endswith(("/escalate", "/close")):
        body = {"note": "a note", "reason": "r-1"}
    elif path == "/v1/users":
        body = {"name": "zed", "role": "reviewer", "password": PASSWORD}
    elif path == "/v1/tokens":
        body = {"name": "cms2"}
    elif path == "/v1/logout":
        body = {}
    params = {"reason": "crime-1"} if path.startswith("/v1/cases/") else {}
    return api.client.request(method, path, headers=headers, params=params,
                              json=body if method == "POST" else None)


def test_every_endpoint_refuses_no_token_and_retailer_keys(api: Api) -> None:
    api.new_case("sub_a:f0")
    found = routes(api)
    assert len(found) >= 16
    for method, path in found:
        for headers in ({}, {"X-API-Key": RETAILER_KEY}, {"Authorization": f"Bearer {RETAILER_KEY}"},
                        {"Authorization": "Basic cm9vdDpwYXNz"}, {"Authorization": "Bearer rfs1.forged.token"}):
            resp = call(api, method, path, headers)
            assert resp.status_code == 401, (method, path, headers, resp.text)
            assert resp.json()["detail"]["reason"] == "unauthorized"


ALLOWED: dict[str, set[str]] = {
    "GET /v1/me": set(PEOPLE) | {"cms"},
    "GET /v1/queue": {"alice", "sue", "audrey", "root"},
    "GET /v1/cases/1": {"alice", "sue", "audrey"},
    "GET /v1/cases/1/probe.jpg": {"alice", "sue", "audrey"},
    "GET /v1/cases/1/still": {"alice", "sue", "audrey"},
    "GET /v1/gallery-photos/gf-subj-1": {"alice", "sue", "audrey"},
    "POST /v1/cases/1/decisions": {"alice", "sue"},
    "POST /v1/cases/1/escalate": {"alice", "sue"},
    "POST /v1/cases/1/resolve": {"sue"},
    "POST /v1/cases/1/close": {"sue"},
    "GET /v1/clusters": {"alice", "sue", "audrey"},
    "GET /v1/clusters/cl-1": {"alice", "sue", "audrey"},
    "POST /v1/clusters/cl-1/confirm": {"alice", "sue"},
    "POST /v1/clusters/cl-1/dismiss": {"alice", "sue"},
    "POST /v1/clusters/cl-1/split": {"alice", "sue"},
    "POST /v1/clusters/cl-1/search": {"alice", "sue"},
    "GET /v1/audit": {"audrey", "root"},  # not supervisors: the log would show them a decision they verify blind
    "GET /v1/audit/export": {"audrey"},
    "GET /v1/retention": {"audrey", "root", "sue"},
    "POST /v1/users": {"root"},
    "POST /v1/tokens": {"root"},
    "GET /v1/decisions": {"cms", "sue", "audrey"},
    "POST /v1/logout": set(PEOPLE) | {"cms"},  # last: it ends the caller's session (a case system's token: 422)
}


def test_each_role_reaches_only_its_endpoints(api: Api) -> None:
    api.new_case("sub_a:f0")
    found = {f"{m} {p}" for m, p in routes(api)}
    assert found == set(ALLOWED), "every route has its expected roles here"
    for who in ("alice", "sue", "audrey", "root", "cms"):
        for key, allowed in ALLOWED.items():
            method, path = key.split(" ")
            resp = call(api, method, path, api.h(who))
            if who in allowed:
                assert resp.status_code not in {401, 403}, (who, key, resp.text)
            else:
                assert resp.status_code == 403, (who, key, resp.text)
                assert resp.json()["detail"]["reason"] == "role_not_allowed"


def test_a_case_system_never_sees_a_candidate(api: Api) -> None:
    case_id = api.new_case("sub_a:f0")
    for path in (f"/v1/cases/{case_id}", "/v1/queue", f"/v1/cases/{case_id}/probe.jpg", "/v1/gallery-photos/gf-x"):
        resp = api.client.get(path, headers=api.h("cms"), params={"reason": "x"})
        assert resp.status_code == 403 and "subj-1" not in resp.text


def test_login_gives_a_session_and_wrong_passwords_get_401(api: Api) -> None:
    bad = api.client.post("/v1/login", json={"name": "alice", "password": "wrong password"})
    assert bad.status_code == 401 and bad.json()["detail"]["reason"] == "unauthorized"
    good = api.client.post("/v1/login", json={"name": "alice", "password": PASSWORD})
    assert good.status_code == 200, good.text
    me = api.client.get("/v1/me", headers={"Authorization": f"Bearer {good.json()['token']}"})
    assert me.json() == {"name": "alice", "role": "reviewer"}
    actions = api.env.actions()
    assert "login" in actions and "login_failed" in actions
    assert PASSWORD not in json.dumps(list(api.env.audit.export(None, None)))


def test_two_reviewers_agree_blind_and_the_decision_is_final(api: Api) -> None:
    case_id = api.new_case("sub_a:f0")
    queue = api.client.get("/v1/queue", headers=api.h("alice")).json()
    assert [(q["case_id"], q["state"], q["candidate_count"]) for q in queue] == [(case_id, "pending", 2)]
    assert "subj-1" not in json.dumps(queue)
    no_reason = api.client.get(f"/v1/cases/{case_id}", headers=api.h("alice"))
    assert no_reason.status_code == 422
    view = api.client.get(f"/v1/cases/{case_id}", headers=api.h("alice"), params={"reason": "crime-1"}).json()
    assert [c["subject_id"] for c in view["candidates"]] == ["subj-1", "subj-2"]
    first = api.decide("alice", case_id, lead=1)
    assert first.status_code == 200 and first.json()["state"] == "awaiting_verification"
    own = api.decide("alice", case_id, lead=1)
    assert own.status_code == 403 and own.json()["detail"]["reason"] == "own_decision"
    blind = api.client.get(f"/v1/cases/{case_id}", headers=api.h("bob"), params={"reason": "crime-1"}).json()
    assert blind["decisions"] == [] and blind["hidden_decisions"] == 1
    assert api.finals == []
    second = api.decide("bob", case_id, lead=1)
    assert second.status_code == 200 and second.json()["state"] == "lead"
    assert api.finals == [1]
    page = api.client.get("/v1/decisions", headers=api.h("cms")).json()
    [event] = page["decisions"]
    assert event["outcome"] == "lead" and event["lead"]["subject_id"] == "subj-1" and event["two_person"]
    assert [d["reviewer"] for d in event["decisions"]] == ["alice", "bob"]
    assert api.client.get("/v1/decisions", headers=api.h("cms"), params={"after": page["next_after"]}).json() == {
        "decisions": [], "next_after": page["next_after"]}
    assert sample(api.registry, "rfr_review_steps_total", stage="first") == 1
    assert sample(api.registry, "rfr_review_steps_total", stage="verification") == 1
    assert sample(api.registry, "rfr_review_decisions_total", outcome="lead") == 1
    views = [e for e in api.env.audit.export(None, None) if e["action"] == "case_view"]
    assert [(e["actor"], e["reason"]) for e in views] == [("alice", "crime-1"), ("bob", "crime-1")]


def test_a_disagreement_goes_to_a_supervisor(api: Api) -> None:
    case_id = api.new_case("sub_a:f0")
    assert api.decide("alice", case_id, lead=1).status_code == 200
    assert api.decide("bob", case_id, lead=None).json()["state"] == "escalated"
    assert sample(api.registry, "rfr_review_disagreements_total") == 1
    assert api.decide("bob", case_id, lead=1).json()["detail"]["reason"] == "wrong_state"
    assert api.decide("alice", case_id, lead=1, path="resolve").status_code == 403
    resolved = api.decide("sue", case_id, lead=None, path="resolve")
    assert resolved.status_code == 200 and resolved.json()["state"] == "no_lead"
    assert api.client.post(f"/v1/cases/{case_id}/close", headers=api.h("sue"),
                           json={"note": "closing", "reason": "crime-1"}).status_code == 409


def test_a_supervisor_who_escalates_a_pending_case_cannot_resolve_it_alone(api: Api) -> None:
    case_id = api.new_case("sub_a:f0")
    assert api.client.post(f"/v1/cases/{case_id}/escalate", headers=api.h("sue"),
                           json={"note": "I will take it", "reason": "crime-1"}).status_code == 200
    own = api.decide("sue", case_id, lead=1, path="resolve")
    assert own.status_code == 403 and own.json()["detail"]["reason"] == "own_decision"
    first = api.decide("sam", case_id, lead=1, path="resolve")  # no decision yet: sam's is the first
    assert first.status_code == 200 and first.json()["state"] == "awaiting_verification"
    assert api.finals == [] and api.env.store.decisions_since(0, 10) == []
    assert api.decide("sue", case_id, lead=1).json()["detail"]["reason"] == "own_decision"
    final = api.decide("alice", case_id, lead=1)
    assert final.json()["state"] == "lead"
    [(_, event)] = api.env.store.decisions_since(0, 10)
    assert event.two_person and [(d.reviewer, d.stage) for d in event.decisions] == [
        ("sam", "first"), ("alice", "verification")]


def test_a_reviewers_escalation_of_a_pending_case_leaves_no_one_person_lead(api: Api) -> None:
    case_id = api.new_case("sub_a:f0")
    assert api.client.post(f"/v1/cases/{case_id}/escalate", headers=api.h("alice"),
                           json={"note": "not sure", "reason": "crime-1"}).status_code == 200
    resolved = api.decide("sue", case_id, lead=1, path="resolve")
    assert resolved.json()["state"] == "awaiting_verification" and api.finals == []
    assert api.decide("alice", case_id, lead=1).json()["detail"]["reason"] == "own_decision"
    assert api.decide("bob", case_id, lead=None).json()["state"] == "escalated"  # a real disagreement
    assert api.decide("sam", case_id, lead=None, path="resolve").json()["state"] == "no_lead"


def test_a_supervisor_verifies_blind(api: Api) -> None:
    case_id = api.new_case("sub_a:f0")
    assert api.decide("alice", case_id, lead=1).status_code == 200
    seen = api.client.get(f"/v1/cases/{case_id}", headers=api.h("sue"), params={"reason": "crime-1"}).json()
    assert seen["state"] == "awaiting_verification" and seen["decisions"] == [] and seen["hidden_decisions"] == 1
    audited = api.client.get(f"/v1/cases/{case_id}", headers=api.h("audrey"), params={"reason": "audit"}).json()
    assert [d["actor"] for d in audited["decisions"]] == ["alice"]
    final = api.decide("sue", case_id, lead=1).json()
    assert final["state"] == "lead" and [d["actor"] for d in final["decisions"]] == ["alice", "sue"]


def test_a_verifier_who_escalates_still_does_not_see_the_first_decision(api: Api) -> None:
    case_id = api.new_case("sub_a:f0")
    assert api.decide("alice", case_id, lead=1).status_code == 200
    escalated = api.client.post(f"/v1/cases/{case_id}/escalate", headers=api.h("bob"),
                                json={"note": "unsure", "reason": "crime-1"})
    assert escalated.status_code == 200
    body = escalated.json()
    assert body["state"] == "escalated" and [d["actor"] for d in body["decisions"]] == ["bob"]
    assert body["hidden_decisions"] == 1
    again = api.client.get(f"/v1/cases/{case_id}", headers=api.h("bob"), params={"reason": "crime-1"}).json()
    assert "alice" not in json.dumps(again["decisions"]) and again["hidden_decisions"] == 1


def test_the_first_reviewer_cannot_escalate_her_own_awaiting_case(api: Api) -> None:
    case_id = api.new_case("sub_a:f0")
    assert api.decide("alice", case_id, lead=1).status_code == 200
    own = api.client.post(f"/v1/cases/{case_id}/escalate", headers=api.h("alice"),
                          json={"note": "skip the second reviewer", "reason": "crime-1"})
    assert own.status_code == 403 and own.json()["detail"]["reason"] == "own_decision"


def test_metrics_never_show_a_first_decisions_outcome(api: Api) -> None:
    case_id = api.new_case("sub_a:f0")
    assert api.decide("alice", case_id, lead=1).status_code == 200
    assert sample(api.registry, "rfr_review_steps_total", stage="first") == 1

    def series(name: str) -> list[dict[str, str]]:
        return [x.labels for m in api.registry.collect() for x in m.samples if x.name == name]

    assert series("rfr_review_decisions_total") == []  # nothing final: no outcome anywhere
    assert all("outcome" not in labels for labels in series("rfr_review_steps_total"))
    assert api.decide("bob", case_id, lead=1).json()["state"] == "lead"
    assert series("rfr_review_decisions_total") == [{"outcome": "lead"}]


def test_refusals_map_to_statuses(api: Api) -> None:
    case_id = api.new_case("sub_a:f0")
    missing = api.client.get("/v1/cases/999", headers=api.h("alice"), params={"reason": "r"})
    assert missing.status_code == 404 and missing.json()["detail"]["reason"] == "case_not_found"
    two = api.client.post(f"/v1/cases/{case_id}/decisions", headers=api.h("alice"), json={"reason": "r", "labels": [
        {"rank": r, "label": "possible_match", "note": "same nose"} for r in (1, 2)]})
    assert two.status_code == 422 and two.json()["detail"]["reason"] == "two_possible_matches"
    short = api.client.post(f"/v1/cases/{case_id}/decisions", headers=api.h("alice"), json={"reason": "r", "labels": [
        {"rank": r, "label": "not_match", "note": "x"} for r in (1, 2)]})
    assert short.status_code == 422 and short.json()["detail"]["reason"] == "note_too_short"
    invalid = api.client.post(f"/v1/cases/{case_id}/decisions", headers=api.h("alice"), json={"labels": "nope"})
    assert invalid.status_code == 422 and invalid.json()["detail"]["reason"] == "invalid_request"
    assert api.decide("sue", case_id, lead=1, path="resolve").json()["detail"]["reason"] == "wrong_state"
    escalated = api.client.post(f"/v1/cases/{case_id}/escalate", headers=api.h("alice"),
                                json={"note": "not sure at all", "reason": "crime-1"})
    assert escalated.status_code == 200 and escalated.json()["state"] == "escalated"
    assert api.decide("bob", case_id, lead=1).status_code == 409
    assert sample(api.registry, "rfr_review_steps_total", stage="escalation") == 1


def test_images_have_their_content_type_and_are_never_cached(api: Api, tmp_path: Path) -> None:
    still = jpeg(64, 48, seed=3)
    ref = api.ctx.blobs.put(still)
    case_id = api.new_case("sub_a:f0", still_ref=ref)
    crop = api.client.get(f"/v1/cases/{case_id}/probe.jpg", headers=api.h("alice"))
    assert crop.status_code == 200 and crop.headers["content-type"] == "image/jpeg"
    assert crop.headers["cache-control"] == "no-store" and crop.content.startswith(b"\xff\xd8")
    whole = api.client.get(f"/v1/cases/{case_id}/still", headers=api.h("audrey"))
    assert whole.status_code == 200 and whole.content == still and whole.headers["cache-control"] == "no-store"
    photo_ref = api.ctx.photo_store.put(PNG)
    from support.review_data import enrolment, unit

    api.env.store.record_gallery_change(enrolment("gc-1", [("gf-subj-1", "subj-1", unit((1, 1.0)))],
                                                  photo_refs=[photo_ref]))
    photo = api.client.get("/v1/gallery-photos/gf-subj-1", headers=api.h("sue"))
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/png"
    assert photo.headers["cache-control"] == "no-store"
    assert api.client.get("/v1/gallery-photos/gf-subj-2", headers=api.h("sue")).status_code == 404
    other = api.new_case("sub_b:f0")
    assert api.client.get(f"/v1/cases/{other}/still", headers=api.h("alice")).json()["detail"]["reason"] == "no_still"
    api.ctx.blobs.delete(ref)
    assert api.client.get(f"/v1/cases/{case_id}/still", headers=api.h("alice")).status_code == 404


def test_every_image_read_is_audited_with_who_why_and_which_part(api: Api) -> None:
    from support.review_data import enrolment, unit

    case_id = api.new_case("sub_a:f0", still_ref=api.ctx.blobs.put(jpeg(64, 48, seed=3)))
    api.ctx.store.record_gallery_change(enrolment("gc-1", [("gf-subj-1", "subj-1", unit((1, 1.0)))],
                                                  photo_refs=[api.ctx.photo_store.put(PNG)]))
    before = len(api.env.actions())
    h = api.h("bob")
    assert api.client.get(f"/v1/cases/{case_id}/probe.jpg", headers=h).status_code == 200
    assert api.client.get(f"/v1/cases/{case_id}/still", headers=h, params={"reason": "CR-7"}).status_code == 200
    assert api.client.get("/v1/gallery-photos/gf-subj-1", headers=h, params={"case_id": case_id}).status_code == 200
    assert api.client.get("/v1/gallery-photos/gf-subj-1", headers=h).status_code == 200
    assert len(api.env.actions()) == before + 4
    newest_first = api.env.audit.query(actor="bob", limit=4)
    assert [(e["action"], e["case_id"], e["reason"], e["details"]) for e in reversed(newest_first)] == [
        ("case_view", case_id, f"image of case {case_id}", {"part": "probe", "via": "api"}),
        ("case_view", case_id, "CR-7", {"part": "still", "via": "api"}),
        ("photo_view", case_id, f"image of case {case_id}", {"gallery_face_id": "gf-subj-1", "via": "api"}),
        ("photo_view", None, "gallery photo", {"gallery_face_id": "gf-subj-1", "via": "api"})]
    # a photo read naming a case it is no candidate of is not tied to that case
    other = api.new_case("sub_b:f0", candidates=(("subj-9", 0.8),))
    assert api.client.get("/v1/gallery-photos/gf-subj-1", headers=h, params={"case_id": other}).status_code == 200
    assert api.env.audit.query(actor="bob", limit=1)[0]["case_id"] is None
    # nothing handed out, nothing audited; a reason over 256 characters is refused
    count = len(api.env.actions())
    assert api.client.get("/v1/gallery-photos/gf-nope", headers=h).status_code == 404
    assert api.client.get(f"/v1/cases/{other}/still", headers=h).status_code == 404
    assert api.client.get(f"/v1/cases/{case_id}/probe.jpg", headers=h, params={"reason": "R" * 257}).status_code == 422
    assert len(api.env.actions()) == count


@pytest.mark.parametrize("path", [
    "/v1/queue?offset=100000000000000000000", "/v1/queue?offset=%C2%B2",
    "/v1/queue?older_than=0001-01-01T00:00%2B01:00", "/v1/audit?offset=100000000000000000000",
    "/v1/audit?case_id=100000000000000000000", "/v1/audit?case_id=%C2%B2", "/v1/audit?since=0001-01-01T00:00%2B01:00",
    "/v1/audit?until=9999-12-31T23:30-01:00", "/v1/audit/export?since=0001-01-01T00:00%2B01:00&reason=r",
    "/v1/decisions?after=100000000000000000000", "/v1/decisions?after=%C2%B2",
    "/v1/cases/100000000000000000000?reason=r", "/v1/cases/100000000000000000000/still",
    "/v1/gallery-photos/" + "x" * 300])
def test_numbers_and_times_out_of_bounds_are_refused_not_a_500(api: Api, path: str) -> None:
    who = "cms" if path.startswith("/v1/decisions") else "audrey"
    resp = api.client.get(path, headers=api.h(who))
    assert resp.status_code == 422, (resp.status_code, resp.text[:200])
    assert resp.json()["detail"]["reason"] == "invalid_request"


def test_numbers_and_times_at_the_bounds_are_answered(api: Api) -> None:
    big = 2**53 - 1
    assert api.client.get(f"/v1/queue?offset={big}", headers=api.h("audrey")).json() == []
    assert api.client.get(f"/v1/audit?offset={big}&case_id={big}", headers=api.h("audrey")).json() == []
    assert api.client.get(f"/v1/decisions?after={big}", headers=api.h("cms")).json()["decisions"] == []
    assert api.client.get("/v1/audit", headers=api.h("audrey"), params={
        "since": "1970-01-01T01:00+01:00", "until": "9999-12-31T23:00-00:30"}).status_code == 200
    assert api.client.get(f"/v1/cases/{big}", headers=api.h("audrey"), params={"reason": "r"}).status_code == 404


def test_audit_query_and_export_reverify_offline(api: Api) -> None:
    case_id = api.new_case("sub_a:f0")
    api.client.get(f"/v1/cases/{case_id}", headers=api.h("alice"), params={"reason": "crime-1"})
    views = api.client.get("/v1/audit", headers=api.h("audrey"), params={"action": "case_view"}).json()
    assert [(v["actor"], v["case_id"]) for v in views] == [("alice", case_id)]
    resp = api.client.get("/v1/audit/export", headers=api.h("audrey"), params={"reason": "annual review"})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/x-ndjson")
    entries = [json.loads(line) for line in resp.text.splitlines()]
    prev = "0" * 64
    for e in entries:
        body = {k: v for k, v in e.items() if k != "hash"}
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        assert e["prev_hash"] == prev and hashlib.sha256(text.encode()).hexdigest() == e["hash"]
        prev = e["hash"]
    assert entries[-1]["action"] == "export" and entries[-1]["reason"] == "annual review"
    assert api.env.audit.verify().ok


def test_administrators_create_users_and_tokens(api: Api) -> None:
    made = api.client.post("/v1/users", headers=api.h("root"),
                           json={"name": "carol", "role": "reviewer", "password": PASSWORD, "reason": "new hire"})
    assert made.status_code == 201 and made.json() == {"name": "carol", "role": "reviewer"}
    again = api.client.post("/v1/users", headers=api.h("root"),
                            json={"name": "carol", "role": "reviewer", "password": PASSWORD})
    assert again.status_code == 409
    weak = api.client.post("/v1/users", headers=api.h("root"), json={"name": "dan", "role": "auditor",
                                                                    "password": "short"})
    assert weak.status_code == 422
    token = api.client.post("/v1/tokens", headers=api.h("root"), json={"name": "police-cms"})
    assert token.status_code == 201 and token.json()["role"] == "case_system"
    expires = datetime.fromisoformat(token.json()["expires_at"])
    assert timedelta(days=364) < expires - datetime.now(UTC) <= timedelta(days=365)
    me = api.client.get("/v1/me", headers={"Authorization": f"Bearer {token.json()['token']}"})
    assert me.json() == {"name": "token:police-cms", "role": "case_system"}
    actions = api.env.actions()
    assert actions.count("user_created") == len(PEOPLE) + 1 and "token_created" in actions


def test_retention_status_names_the_policy_and_what_is_due(api: Api) -> None:
    api.env.store.record_search(candidate_list("sub_n:f0", candidates=()))
    api.env.clock.advance(days=40)
    status = api.client.get("/v1/retention", headers=api.h("audrey")).json()
    assert status["policy"]["no_candidate_days"] == 31 and status["last_run_at"] is None
    assert status["due"]["no_candidate"] == 1


def test_a_store_outage_is_503(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    def down(*_a: object, **_k: object) -> None:
        raise OperationalError("SELECT", {}, Exception("database is locked"))

    monkeypatch.setattr(api.env.store, "queue", down)
    resp = api.client.get("/v1/queue", headers=api.h("alice"))
    assert resp.status_code == 503 and resp.json()["detail"]["reason"] == "unavailable"


def test_openapi_documents_the_bearer_scheme(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    assert "bearer" in spec["components"]["securitySchemes"]
    assert "/v1/cases/{case_id}/decisions" in spec["paths"]


# --- regression: finding 3 (administrators minted API tokens of any role) -----------------------------------------
def test_api_tokens_are_for_case_systems_only_and_expire(api: Api) -> None:
    case_id = api.new_case("sub_a:f0")
    assert api.decide("alice", case_id, lead=1).status_code == 200
    for role in ("reviewer", "supervisor", "auditor", "administrator"):
        resp = api.client.post("/v1/tokens", headers=api.h("root"), json={"name": "alice", "role": role})
        assert resp.status_code == 422, (role, resp.text)
        assert "case system" in resp.json()["detail"]["message"]
    assert api.env.actions().count("token_created") == 1  # the fixture's cms only
    for days in (0, 3651):
        resp = api.client.post("/v1/tokens", headers=api.h("root"), json={"name": "cad", "expires_in_days": days})
        assert resp.status_code == 422
    made = api.client.post("/v1/tokens", headers=api.h("root"), json={"name": "alice", "expires_in_days": 30})
    assert made.status_code == 201, made.text
    expires = datetime.fromisoformat(made.json()["expires_at"])
    assert timedelta(days=29) < expires - datetime.now(UTC) <= timedelta(days=30)
    bearer = {"Authorization": f"Bearer {made.json()['token']}"}
    assert api.client.get("/v1/me", headers=bearer).json() == {"name": "token:alice", "role": "case_system"}
    labels = [{"rank": r, "label": "possible_match" if r == 1 else "not_match", "note": "looked"} for r in (1, 2)]
    verify = api.client.post(f"/v1/cases/{case_id}/decisions", headers=bearer,
                             json={"labels": labels, "reason": "crime-1"})
    assert verify.status_code == 403  # a case system's token never decides, whatever its name


# --- regression: finding 4 (POST /v1/login unthrottled, flooding the audit log) -----------------------------------
def test_api_login_is_throttled_and_cannot_flood_the_audit_log(api: Api) -> None:
    now = [1000.0]
    api.ctx.login_throttle.clock = lambda: now[0]
    before = len(list(api.env.audit.export(None, None)))
    codes = [api.client.post("/v1/login", json={"name": "alice", "password": f"guess-{i}"}).status_code
             for i in range(40)]
    assert codes == [401] * 5 + [429] * 35
    refused = api.client.post("/v1/login", json={"name": "alice", "password": PASSWORD})  # even the right one
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert refused.json()["detail"]["reason"] == "throttled"
    new = list(api.env.audit.export(None, None))[before:]
    assert [(e["action"], e["actor"], e["details"]["why"]) for e in new] == [
        ("login_failed", "unauthenticated", "bad_password")] * 5 + [("login_failed", "unauthenticated", "throttled")]
    assert all(e["details"]["name"] == "alice" for e in new)
    now[0] += 1.0
    good = api.client.post("/v1/login", json={"name": "alice", "password": PASSWORD})
    assert good.status_code == 200
    last = list(api.env.audit.export(None, None))[-1]
    assert (last["action"], last["actor"], last["details"]) == ("login", "alice", {"method": "password",
                                                                                  "suppressed": 35})
    for _ in range(20):  # an actor name of the attacker's choosing never lands in the log
        api.client.post("/v1/login", json={"name": "rfr-review", "password": "x"})
    assert api.env.audit.query(actor="rfr-review") == []
    spoofed = [e for e in api.env.audit.export(None, None) if e["details"].get("name") == "rfr-review"]
    assert len(spoofed) == 6  # five failures, then one entry for the throttle window (14 counted, not written)
    long = api.client.post("/v1/login", json={"name": "x" * 128, "password": "x"})
    assert long.status_code == 401
    assert list(api.env.audit.export(None, None))[-1]["details"]["name"] == "x" * 128


# --- regression: finding 11 (signing out did not end the session) -------------------------------------------------
def test_api_logout_ends_the_session(api: Api) -> None:
    token = api.client.post("/v1/login", json={"name": "alice", "password": PASSWORD}).json()["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    assert api.client.get("/v1/me", headers=bearer).status_code == 200
    assert api.client.post("/v1/logout", headers=bearer).status_code == 204
    assert api.client.get("/v1/me", headers=bearer).status_code == 401
    assert api.client.post("/v1/logout", headers=bearer).status_code == 401
    assert api.client.get("/v1/me", headers=api.h("alice")).status_code == 200  # another session of alice's
    refused = api.client.post("/v1/logout", headers=api.h("cms"))
    assert refused.status_code == 422 and refused.json()["detail"]["reason"] == "not_a_session"
    assert api.client.get("/v1/decisions", headers=api.h("cms")).status_code == 200
