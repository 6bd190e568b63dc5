"""The review API through FastAPI's TestClient on a real SQLite review store: roles on every endpoint, the
two-person flow, refusals as HTTP statuses, images, audit query and export, administration."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
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
    ctx = api_context(env, users, blobs, retention=retention.status, metrics=metrics)
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
        concrete = path.replace("{case_id}", "1").replace("{gallery_face_id}", "gf-subj-1")
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
    "GET /v1/audit": {"audrey", "root", "sue"},
    "GET /v1/audit/export": {"audrey"},
    "GET /v1/retention": {"audrey", "root", "sue"},
    "POST /v1/users": {"root"},
    "POST /v1/tokens": {"root"},
    "GET /v1/decisions": {"cms", "sue", "audrey"},
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
    assert sample(api.registry, "rfr_review_decisions_total", stage="first", outcome="lead") == 1
    assert sample(api.registry, "rfr_review_decisions_total", stage="verification", outcome="lead") == 1
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
    assert sample(api.registry, "rfr_review_decisions_total", stage="escalation", outcome="none") == 1


def test_images_have_their_content_type_and_are_never_cached(api: Api, tmp_path: Path) -> None:
    still = jpeg(64, 48, seed=3)
    ref = api.ctx.blobs.put(still)
    case_id = api.new_case("sub_a:f0", still_ref=ref)
    crop = api.client.get(f"/v1/cases/{case_id}/probe.jpg", headers=api.h("alice"))
    assert crop.status_code == 200 and crop.headers["content-type"] == "image/jpeg"
    assert crop.headers["cache-control"] == "no-store" and crop.content.startswith(b"\xff\xd8")
    whole = api.client.get(f"/v1/cases/{case_id}/still", headers=api.h("audrey"))
    assert whole.status_code == 200 and whole.content == still and whole.headers["cache-control"] == "no-store"
    photo_ref = api.ctx.blobs.put(PNG)
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


def test_audit_query_and_export_reverify_offline(api: Api) -> None:
    case_id = api.new_case("sub_a:f0")
    api.client.get(f"/v1/cases/{case_id}", headers=api.h("alice"), params={"reason": "crime-1"})
    views = api.client.get("/v1/audit", headers=api.h("sue"), params={"action": "case_view"}).json()
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
