"""The review service through `rfr up`: stills -> candidate lists -> cases -> two-person decisions -> one lead on
rfr.decisions.v1; a disagreement reaches a supervisor; a probe of someone enrolled later becomes a case by re-search;
the audit log holds every step, `rfr audit verify` passes, and fails naming the entry once an entry is edited or the
last ones deleted (on a copy of the store: the running service keeps its own)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.review_e2e import (
    add_users,
    api_client,
    case_of,
    decision_events,
    enrol,
    people,
    review_base,
    still,
    submit,
)
from support.stack import rfr_cli

from rfr.core.settings import Settings, review_database_url
from rfr.tools import stack
from rfr.tools.demo import RETAILER

USERS = {"alice": "reviewer", "bob": "reviewer", "carol": "supervisor", "dan": "auditor"}
REASON = "crime ref CR-2026-0042"


@pytest.fixture(scope="module")
def api(live_stack: Settings) -> Iterator[Callable[[str], httpx.Client]]:
    """A logged-in API client per user (the users are made with `rfr review user-add`, as an administrator would)."""
    add_users(live_stack, USERS)
    clients: dict[str, httpx.Client] = {}

    def client(name: str) -> httpx.Client:
        if name not in clients:
            clients[name] = api_client(live_stack, name)
        return clients[name]

    yield client
    for c in clients.values():
        c.close()


def _labels(case: dict[str, Any], match_rank: int | None) -> list[dict[str, Any]]:
    return [{"rank": c["rank"], "label": "possible_match" if c["rank"] == match_rank else "not_match",
             "note": "compared ears, jaw line and hairline"} for c in case["candidates"]]


def _decide(client: httpx.Client, case_id: int, match_rank: int | None, path: str = "decisions") -> dict[str, Any]:
    case = client.get(f"/v1/cases/{case_id}", params={"reason": REASON})
    assert case.status_code == 200, case.text
    done = client.post(f"/v1/cases/{case_id}/{path}",
                       json={"labels": _labels(case.json(), match_rank), "reason": REASON})
    assert done.status_code == 200, done.text
    return dict(done.json())


def test_two_people_make_a_lead_and_a_disagreement_goes_to_the_supervisor(
        live_stack: Settings, lfw_dir: Path, tmp_path: Path, api: Callable[[str], httpx.Client]) -> None:
    persons = people(lfw_dir, 300, 2)
    enrol(live_stack, tmp_path / "g", persons, "custody images, PACE s.64A")
    # the custody photos, as CCTV sees them
    probes = [still(photos[0], seed, RETAILER) for seed, photos in enumerate(persons)]
    results = submit(live_stack, probes)
    ranks = []
    for p in probes:
        [cl] = results[p.submission_id].lists.values()
        ranks.append(next(c.rank for c in cl.candidates if c.subject_id == p.truth))
    alice, bob, carol, dan = (api(n) for n in ("alice", "bob", "carol", "dan"))
    agreed, disputed = (case_of(alice, p.submission_id) for p in probes)

    first = _decide(alice, agreed, ranks[0])
    assert first["state"] == "awaiting_verification"
    blind = bob.get(f"/v1/cases/{agreed}", params={"reason": REASON}).json()
    assert blind["decisions"] == [] and blind["hidden_decisions"] == 1  # the verifier does not see the first
    own = alice.post(f"/v1/cases/{agreed}/decisions", json={"labels": _labels(blind, ranks[0]), "reason": REASON})
    assert own.status_code == 403 and "own_decision" in own.text
    assert dan.post(f"/v1/cases/{agreed}/decisions",
                    json={"labels": _labels(blind, ranks[0]), "reason": REASON}).status_code == 403
    final = _decide(bob, agreed, ranks[0])
    assert (final["state"], final["lead_subject_id"]) == ("lead", probes[0].truth)

    assert _decide(alice, disputed, ranks[1])["state"] == "awaiting_verification"
    assert _decide(bob, disputed, None)["state"] == "escalated"  # bob sees no match: a disagreement
    in_queue = carol.get("/v1/queue", params={"state": "escalated", "limit": 500}).json()
    items = in_queue["items"] if isinstance(in_queue, dict) else in_queue
    assert disputed in {i["case_id"] for i in items}
    resolved = _decide(carol, disputed, ranks[1], path="resolve")
    assert (resolved["state"], resolved["lead_subject_id"]) == ("lead", probes[1].truth)

    events = decision_events(live_stack, {agreed, disputed})
    assert {k: len({e.event_id for e in v}) for k, v in events.items()} == {agreed: 1, disputed: 1}
    lead = events[agreed][0]
    assert lead.outcome == "lead" and lead.lead is not None and lead.lead.subject_id == probes[0].truth
    assert lead.two_person and [(d.reviewer, d.stage) for d in lead.decisions] == [
        ("alice", "first"), ("bob", "verification")]
    assert lead.submission_id == probes[0].submission_id and "never an identification" in lead.notice
    assert [d.stage for d in events[disputed][0].decisions] == ["first", "verification", "supervisor"]

    audit = dan.get("/v1/audit", params={"case_id": agreed, "limit": 100})
    assert audit.status_code == 200, audit.text
    body = audit.json()
    actions = [e["action"] for e in (body["entries"] if isinstance(body, dict) else body)]
    for step in ("case_created", "case_view", "decision", "verification"):
        assert step in actions, actions


def test_a_retailer_key_is_refused_everywhere(live_stack: Settings) -> None:
    made = rfr_cli(live_stack, "api-keys", "create", "shop-e2e")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    base = review_base(live_stack)
    for path in ("/v1/queue", "/v1/cases/1?reason=x", "/v1/audit", "/v1/decisions", "/v1/retention"):
        for headers in ({"X-API-Key": key}, {"Authorization": f"Bearer {key}"}):
            assert httpx.get(base + path, headers=headers, timeout=30).status_code == 401, (path, headers)


def test_a_probe_of_someone_enrolled_later_becomes_a_case(
        live_stack: Settings, lfw_dir: Path, tmp_path: Path, api: Callable[[str], httpx.Client]) -> None:
    [person] = people(lfw_dir, 310, 1)
    probe = still(person[0], 7, RETAILER)
    [cl] = submit(live_stack, [probe])[probe.submission_id].lists.values()
    assert probe.truth not in {c.subject_id for c in cl.candidates}  # not enrolled yet
    enrol(live_stack, tmp_path / "g", [person], "booked in today")
    case_id = case_of(api("alice"), probe.submission_id, trigger="re_search")
    case = api("alice").get(f"/v1/cases/{case_id}", params={"reason": REASON}).json()
    assert probe.truth in {c["subject_id"] for c in case["candidates"]}
    assert case["search"]["trigger"] == "re_search"


def _copy_store(settings: Settings, target: Path) -> str:
    source = review_database_url(settings).removeprefix("sqlite:///")
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    return f"sqlite:///{target}"


def _verify(settings: Settings, url: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ) | stack.settings_env(settings) | {"RFR_REVIEW__DATABASE_URL": url}
    return subprocess.run([sys.executable, "-m", "rfr", "audit", "verify"], env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def test_audit_verify_passes_and_names_an_edited_or_a_deleted_entry(
        live_stack: Settings, tmp_path: Path, api: Callable[[str], httpx.Client]) -> None:
    api("dan").get("/v1/queue")  # at least the logins are in the log
    ok = rfr_cli(live_stack, "audit", "verify")
    assert ok.returncode == 0, ok.stdout + ok.stderr

    edited = _copy_store(live_stack, tmp_path / "edited.db")
    with sqlite3.connect(edited.removeprefix("sqlite:///")) as db:
        db.execute("UPDATE audit_entries SET actor = 'mallory' WHERE seq = 3")
    bad = _verify(live_stack, edited)
    assert bad.returncode == 1 and "entry 3" in bad.stdout + bad.stderr, bad.stdout + bad.stderr

    cut = _copy_store(live_stack, tmp_path / "cut.db")
    with sqlite3.connect(cut.removeprefix("sqlite:///")) as db:
        [(last,)] = db.execute("SELECT max(seq) FROM audit_entries").fetchall()
        db.execute("DELETE FROM audit_entries WHERE seq > ?", (last - 3,))
    bad = _verify(live_stack, cut)
    assert bad.returncode == 1 and f"entry {last - 2}" in bad.stdout + bad.stderr, bad.stdout + bad.stderr
