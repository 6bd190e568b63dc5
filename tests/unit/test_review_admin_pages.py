"""The oversight pages of the review service (audit, gallery, retention, disclosure) through FastAPI's TestClient on a
real SQLite review store: roles, filters and paging, the audited export and chain verification, the gallery erasure
(announced first, then deleted; refused when Milvus or Kafka is down), retention's schedule, the disclosure pack."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from support.review_data import ALICE, BOB, POLICY, SUE, Env, candidate_list, enrolment, labels, open_store, unit
from support.review_pages import api_context, users_of
from support.stills import jpeg

from rfr.core.blobstore import FileBlobStore
from rfr.core.db import sqlite_url
from rfr.core.kafka import BrokerUnavailable
from rfr.core.review_messages import GalleryChange
from rfr.core.settings import Settings
from rfr.gallery.base import GalleryUnavailableError
from rfr.review.audit import audit_entries
from rfr.review.retention import run_retention, upcoming
from rfr.review.users import Principal, Role, UserStore
from services.review.app import create_app
from services.review.context import ApiContext
from services.review.jobs import RetentionJob
from services.review.web import gallery_erase

PASSWORD = "a long enough password"
PEOPLE = {"alice": Role.REVIEWER, "bob": Role.REVIEWER, "sue": Role.SUPERVISOR, "audrey": Role.AUDITOR,
          "root": Role.ADMINISTRATOR}
CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


@dataclass
class Pages:
    app: Any
    env: Env
    ctx: ApiContext
    users: UserStore
    blobs: FileBlobStore
    photos: FileBlobStore
    clients: dict[str, TestClient] = field(default_factory=dict)

    def as_(self, who: str) -> TestClient:
        """A browser signed in as ``who`` (session cookie), or signed out for ``""``."""
        if who not in self.clients:
            client = TestClient(self.app)
            if who:
                client.cookies.set("rfr_session", self.users.issue_session(Principal(who, PEOPLE[who])))
            self.clients[who] = client
        return self.clients[who]

    def csrf(self, who: str, page: str = "/audit") -> str:
        found = CSRF.search(self.as_(who).get(page).text)
        assert found, page
        return found.group(1)

    def decided_case(self, face_id: str, lead: int | None = 1, **kw: Any) -> int:
        case_id = self.env.store.record_search(candidate_list(face_id, **kw))
        assert isinstance(case_id, int)
        self.env.store.decide(case_id, ALICE, labels(2, lead=lead), "crime-1", "first look")
        self.env.store.decide(case_id, BOB, labels(2, lead=lead), "crime-1", "confirmed")
        return case_id


@pytest.fixture
def pages(tmp_path: Path) -> Iterator[Pages]:
    env = open_store(sqlite_url(tmp_path / "review.db"))
    users = users_of(env, PEOPLE, PASSWORD)
    blobs, photos = FileBlobStore(tmp_path / "blobs"), FileBlobStore(tmp_path / "blobs" / "gallery")
    retention = RetentionJob(env.store, blobs, POLICY, clock=env.clock)
    ctx = api_context(env, users, blobs, retention=retention.status, settings=Settings(retention=POLICY),
                      photos=photos)
    app = create_app(ctx)
    yield Pages(app, env, ctx, users, blobs, photos)
    env.store.engine.dispose()


def rows(html: str, testid: str) -> int:
    return html.count(f'data-testid="{testid}"')


# -- roles ---------------------------------------------------------------------------------------------------------

ALLOWED = {
    # Not supervisors ("sue"): they verify and resolve cases blind, and the log holds a case's earlier decisions.
    "/audit": {"audrey", "root"}, "/audit/1": {"audrey", "root"}, "/audit/export": {"audrey"},
    "/retention": {"sue", "audrey", "root"}, "/gallery": {"root"}, "/cases/1/disclosure": {"sue", "audrey"},
    "/cases/1/disclosure.pdf": {"sue", "audrey"},
}


def test_each_page_admits_only_its_roles_and_sends_strangers_to_sign_in(pages: Pages) -> None:
    pages.decided_case("sub_r:f0")
    for path, allowed in ALLOWED.items():
        for who in PEOPLE:
            resp = pages.as_(who).get(path, follow_redirects=False)
            assert resp.status_code == (200 if who in allowed else 403), (path, who, resp.text[:300])
            assert resp.headers["cache-control"] == "no-store" and "frame-ancestors 'none'" in resp.headers[
                "content-security-policy"]
        anonymous = pages.as_("").get(path, follow_redirects=False)
        assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/login?next=")
    token = pages.users.issue_session(Principal("audrey", Role.AUDITOR))
    bearer = TestClient(pages.app).get("/audit", headers={"Authorization": f"Bearer {token}"},
                                       follow_redirects=False)
    assert bearer.status_code == 303, "pages take the session cookie only"


# -- audit ---------------------------------------------------------------------------------------------------------

def test_the_audit_page_filters_by_who_what_when_case_and_reason(pages: Pages) -> None:
    first = pages.decided_case("sub_a:f0", case_ref="crime-1")
    second = pages.env.store.record_search(candidate_list("sub_b:f0", case_ref="burglary-77"))
    assert second is not None
    pages.env.clock.advance(days=1)
    pages.env.store.case(second, BOB, "Burglary-77 follow-up")
    audrey = pages.as_("audrey")

    by_bob = audrey.get("/audit", params={"actor": "bob"}).text
    assert rows(by_bob, "audit-row") == 2 and "verification" in by_bob and "case_view" in by_bob
    assert rows(audrey.get("/audit", params={"action": "decision"}).text, "audit-row") == 1
    assert rows(audrey.get("/audit", params={"case_id": str(first)}).text, "audit-row") == 4  # search..verification
    burglary = audrey.get("/audit", params={"reason": "BURGLARY-77"}).text  # contains, case-insensitive
    assert rows(burglary, "audit-row") == 3 and "crime-1" not in burglary
    later = audrey.get("/audit", params={"since": "2025-03-02T00:00", "actor": "bob"}).text
    assert rows(later, "audit-row") == 1 and "Burglary-77 follow-up" in later
    assert rows(audrey.get("/audit", params={"until": "2025-03-02T00:00:00Z", "actor": "bob"}).text,
                "audit-row") == 1
    assert "No entry matches" in audrey.get("/audit", params={"actor": "nobody"}).text

    for bad in ({"case_id": "x1"}, {"since": "yesterday"}, {"action": "delete_everything"}, {"case_id": "\u00b2"},
                {"offset": "\u00b2"}, {"case_id": "1" + "0" * 20}, {"offset": "1" + "0" * 20},
                {"since": "0001-01-01T00:00+01:00"}, {"until": "9999-12-31T23:30-01:00"}, {"since": "1969-12-31"}):
        resp = audrey.get("/audit", params=bad)
        assert resp.status_code == 400 and 'data-testid="audit-error"' in resp.text, bad
    at_bounds = {"case_id": str(2**53 - 1), "offset": str(2**53 - 1), "since": "1970-01-01T00:00",
                 "until": "9999-12-31T23:59"}
    assert "No entry matches" in audrey.get("/audit", params=at_bounds).text
    assert audrey.get("/audit/100000000000000000000").status_code == 404
    assert audrey.get("/retention", params={"offset": "\u00b2"}).status_code == 400
    assert pages.as_("root").get("/gallery", params={"offset": "1" + "0" * 20}).status_code == 400
    export = audrey.get("/audit/export", params={"reason": "DPO", "since": "0001-01-01T00:00+01:00"})
    assert export.status_code == 400 and "between 1970 and 9999" in export.text


def test_the_audit_page_pages_newest_first(pages: Pages) -> None:
    for i in range(60):
        pages.env.audit.append_now("robot", "system", "login", reason=f"r-{i}")
    total = len(list(pages.env.audit.export()))
    first = pages.as_("root").get("/audit").text
    assert rows(first, "audit-row") == 50 and f"Entries 1 to 50 of {total}" in first
    seqs = [int(s) for s in re.findall(r'<td><a href="/audit/(\d+)">', first)]
    assert seqs == sorted(seqs, reverse=True) and seqs[0] == total
    assert 'href="/audit?offset=50" rel="next"' in first
    older = pages.as_("root").get("/audit", params={"offset": "50"}).text
    assert rows(older, "audit-row") == total - 50 and 'rel="prev"' in older and 'rel="next"' not in older
    kept = pages.as_("root").get("/audit", params={"actor": "robot"}).text
    assert "actor=robot&amp;offset=50" in kept


def test_one_entry_shows_every_field_and_its_hashes(pages: Pages) -> None:
    case_id = pages.decided_case("sub_e:f0")
    entry = next(e for e in pages.env.audit.export() if e["action"] == "decision")
    page = pages.as_("audrey").get(f"/audit/{entry['seq']}").text
    for value in (entry["hash"], entry["prev_hash"], "alice", "reviewer", "decision", "crime-1", "first look",
                  f'href="/audit?case_id={case_id}"', "possible_match"):
        assert value in page
    assert pages.as_("audrey").get("/audit/99999").status_code == 404


def test_the_export_is_audited_before_it_streams(pages: Pages) -> None:
    pages.decided_case("sub_x:f0")
    audrey = pages.as_("audrey")
    form = audrey.get("/audit/export")
    assert form.status_code == 200 and 'name="reason" required' in form.text
    assert audrey.get("/audit/export", params={"reason": "x"}).status_code == 422
    assert audrey.get("/audit/export", params={"reason": "R" * 257}).status_code == 422
    before = len(list(pages.env.audit.export()))
    resp = audrey.get("/audit/export", params={"reason": "DPO request 12"})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/x-ndjson")
    assert "attachment" in resp.headers["content-disposition"]
    lines = [json.loads(line) for line in resp.text.splitlines()]
    assert len(lines) == before + 1
    assert lines[-1]["action"] == "export" and lines[-1]["actor"] == "audrey"
    assert lines[-1]["reason"] == "DPO request 12" and lines[-1]["details"]["what"] == "audit_log"
    ranged = audrey.get("/audit/export", params={"reason": "range", "since": "2030-01-01T00:00"})
    assert ranged.text == ""


def test_verify_needs_the_form_token_shows_the_result_and_is_recorded(pages: Pages) -> None:
    pages.decided_case("sub_v:f0")
    audrey = pages.as_("audrey")
    assert audrey.post("/audit/verify", data={}).status_code == 403
    assert audrey.post("/audit/verify", data={"csrf": "0" * 64}).status_code == 403
    ok = audrey.post("/audit/verify", data={"csrf": pages.csrf("audrey")})
    assert ok.status_code == 200 and "The chain holds" in ok.text
    last = list(pages.env.audit.export())[-1]
    assert last["action"] == "audit_verify" and last["actor"] == "audrey" and last["details"]["ok"] is True

    decision = next(e for e in pages.env.audit.export() if e["action"] == "decision")
    with pages.env.store.engine.begin() as conn:
        conn.execute(update(audit_entries).where(audit_entries.c.seq == decision["seq"])
                     .values(reason="edited afterwards"))
    bad = pages.as_("root").post("/audit/verify", data={"csrf": pages.csrf("root")})
    assert "does NOT hold" in bad.text
    assert f"entry {decision['seq']}: hash does not match its content (edited)" in bad.text
    assert list(pages.env.audit.export())[-1]["details"]["ok"] is False


# -- gallery -------------------------------------------------------------------------------------------------------

class FakeGallery:
    """The Milvus gallery of an erasure: faces by (face id, watch-list) per subject; every call logged in ``calls``."""

    def __init__(self, faces: dict[str, list[tuple[str, str]]], calls: list[str], fail: str = "") -> None:
        self.faces = faces
        self.calls = calls
        self.fail = fail
        self.model_id = "facenet-test"

    def subject_faces(self, subject_id: str, watch_lists: Sequence[str] | None = None) -> list[tuple[str, str]]:
        self.calls.append("subject_faces")
        if self.fail == "query":
            raise GalleryUnavailableError("Milvus at http://127.0.0.1:1: query subject failed: refused")
        return [f for f in self.faces.get(subject_id, []) if watch_lists is None or f[1] in watch_lists]

    def delete_subject(self, subject_id: str, watch_lists: Sequence[str] | None = None) -> int:
        self.calls.append("delete")
        if self.fail == "delete":
            raise GalleryUnavailableError("Milvus at http://127.0.0.1:1: delete failed: refused")
        gone = [f for f in self.faces.get(subject_id, []) if watch_lists is None or f[1] in watch_lists]
        self.faces[subject_id] = [f for f in self.faces.get(subject_id, []) if f not in gone]
        return len(gone)

    def close(self) -> None:
        self.calls.append("close")


@dataclass
class Wiring:
    """The fakes behind the gallery page's erase form: what was announced, the order of calls."""

    gallery: FakeGallery
    announced: list[GalleryChange] = field(default_factory=list)
    broker_down: bool = False


@pytest.fixture
def wiring(monkeypatch: pytest.MonkeyPatch) -> Wiring:
    calls: list[str] = []
    wired = Wiring(FakeGallery({"subj-a": [("gf-a1", "custody"), ("gf-a2", "custody"), ("gf-a9", "staff")]}, calls))

    def announce(settings: Settings, changes: Sequence[GalleryChange]) -> None:
        calls.append("announce")
        if wired.broker_down:
            raise BrokerUnavailable("Kafka cluster at 127.0.0.1:19092 did not answer within 5s")
        wired.announced.extend(changes)

    monkeypatch.setattr(gallery_erase, "open_milvus", lambda settings: wired.gallery)
    monkeypatch.setattr(gallery_erase, "announce_changes", announce)
    return wired


def enrol(pages: Pages) -> dict[str, str]:
    refs = {face: pages.photos.put(jpeg(40, 48, seed=i)) for i, face in enumerate(("gf-a1", "gf-a2", "gf-b1"))}
    pages.env.store.record_gallery_change(enrolment("gc-1", [
        ("gf-a1", "subj-a", unit((1, 1.0))), ("gf-a2", "subj-a", unit((2, 1.0))), ("gf-b1", "subj-b", unit((3, 1.0)))],
        photo_refs=list(refs.values())))
    return refs


def test_the_gallery_page_lists_subjects_and_photos_by_watch_list(pages: Pages) -> None:
    refs = enrol(pages)
    root = pages.as_("root")
    page = root.get("/gallery").text
    assert rows(page, "gallery-subject") == 2 and rows(page, "gallery-photo") == 3 and rows(page, "erase-form") == 2
    assert "custody</a>: 2 subject(s), 3 photo(s)" in page
    assert 'src="/gallery/photos/gf-a1"' in page and 'required minlength="3"' in page
    assert rows(root.get("/gallery", params={"subject": "J-B"}).text, "gallery-subject") == 1
    assert rows(root.get("/gallery", params={"watch_list": "staff"}).text, "gallery-subject") == 0
    photo = root.get("/gallery/photos/gf-a1")
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
    assert photo.content == pages.photos.get(refs["gf-a1"]) and photo.headers["cache-control"] == "no-store"
    seen = pages.env.audit.query(actor="root", limit=1)[0]
    assert (seen["action"], seen["case_id"], seen["reason"], seen["details"]) == (
        "photo_view", None, "gallery page", {"gallery_face_id": "gf-a1", "via": "gallery page"})
    count = len(list(pages.env.audit.export()))
    assert root.get("/gallery/photos/gf-nope").status_code == 404
    assert pages.as_("sue").get("/gallery/photos/gf-a1").status_code == 403
    assert root.get("/gallery/photos/" + "x" * 300).status_code == 400
    assert len(list(pages.env.audit.export())) == count  # nothing shown, nothing audited


def test_erasing_announces_first_then_deletes_and_the_review_store_records_it(pages: Pages, wiring: Wiring) -> None:
    enrol(pages)
    root = pages.as_("root")
    form = {"csrf": pages.csrf("root", "/gallery"), "reason": "court order 2025/17", "confirm": "yes"}
    resp = root.post("/gallery/custody/subj-a/erase", data=form)
    assert resp.status_code == 200, resp.text
    assert "2 photo(s) erased from the gallery on custody" in resp.text
    assert wiring.gallery.calls == ["subject_faces", "announce", "delete", "close"]
    assert wiring.gallery.faces["subj-a"] == [("gf-a9", "staff")], "only the watch-list given"
    [change] = wiring.announced
    assert change.action == "erased" and change.watch_list == "custody" and change.actor == "root"
    assert change.reason == "court order 2025/17" and [f.face_id for f in change.faces] == ["gf-a1", "gf-a2"]

    for announced in wiring.announced:  # what the review handler does when it reads the gallery topic
        pages.env.store.record_gallery_change(announced)
    page = root.get("/gallery").text
    assert rows(page, "subject-erased") == 1 and rows(page, "erase-form") == 1
    assert 'class="no-photo">erased 20' in page
    assert root.get("/gallery/photos/gf-a1").status_code == 404
    [entry] = [e for e in pages.env.audit.export() if e["action"] == "gallery_erasure"]
    assert entry["actor"] == "root" and entry["reason"] == "court order 2025/17"
    assert entry["details"]["faces"] == [["gf-a1", "subj-a"], ["gf-a2", "subj-a"]]
    assert rows(root.get("/gallery", params={"erased": "hide"}).text, "gallery-subject") == 1


def test_an_erasure_without_reason_confirmation_or_form_token_is_refused(pages: Pages, wiring: Wiring) -> None:
    enrol(pages)
    root = pages.as_("root")
    token = pages.csrf("root", "/gallery")
    for data, status in (({"reason": "court order 17", "confirm": "yes"}, 403),
                         ({"csrf": token, "reason": "  x ", "confirm": "yes"}, 422),
                         ({"csrf": token, "reason": "court order 17"}, 422),
                         ({"csrf": token, "reason": "R" * 257, "confirm": "yes"}, 422),
                         ({"csrf": token, "reason": "court order 17", "confirm": "yes"}, 404)):
        path = "/gallery/custody/nobody/erase" if status == 404 else "/gallery/custody/subj-a/erase"
        assert root.post(path, data=data).status_code == status, data
    assert "announce" not in wiring.gallery.calls and "delete" not in wiring.gallery.calls
    assert pages.as_("audrey").post("/gallery/custody/subj-a/erase", data={
        "csrf": pages.csrf("audrey"), "reason": "court order 17", "confirm": "yes"}).status_code == 403


def test_an_erasure_is_refused_clearly_when_kafka_or_milvus_is_down(pages: Pages, wiring: Wiring) -> None:
    enrol(pages)
    root = pages.as_("root")
    form = {"csrf": pages.csrf("root", "/gallery"), "reason": "court order 17", "confirm": "yes"}
    wiring.broker_down = True
    resp = root.post("/gallery/custody/subj-a/erase", data=form)
    assert resp.status_code == 503 and "nothing was erased" in resp.text and "Kafka" in resp.text
    assert "delete" not in wiring.gallery.calls and len(wiring.gallery.faces["subj-a"]) == 3

    wiring.broker_down, wiring.gallery.fail = False, "query"
    resp = root.post("/gallery/custody/subj-a/erase", data=form)
    assert resp.status_code == 503 and "nothing was erased" in resp.text and "Milvus" in resp.text
    assert wiring.announced == []

    wiring.gallery.fail = "delete"
    resp = root.post("/gallery/custody/subj-a/erase", data=form)
    assert resp.status_code == 503 and "erase again" in resp.text and len(wiring.announced) == 1

    with pytest.raises(gallery_erase.ErasureRefused, match="rfr gallery delete") as refused:
        gallery_erase.GalleryEraser(None, pages.env.store.engine).erase("custody", "subj-a", "root", "court order")
    assert refused.value.reason == "not_configured"


def test_a_subject_gone_from_milvus_is_still_erased_from_the_review_pages(pages: Pages, wiring: Wiring) -> None:
    enrol(pages)
    wiring.gallery.faces.clear()  # erased with `rfr gallery delete --no-announce`
    resp = pages.as_("root").post("/gallery/custody/subj-b/erase", data={
        "csrf": pages.csrf("root", "/gallery"), "reason": "court order 18", "confirm": "yes"})
    assert resp.status_code == 200 and "0 photo(s) erased from the gallery" in resp.text
    assert [f.face_id for f in wiring.announced[0].faces] == ["gf-b1"]


# -- retention -----------------------------------------------------------------------------------------------------

def test_retention_shows_the_policy_what_is_due_what_comes_and_what_went(pages: Pages) -> None:
    store, clock = pages.env.store, pages.env.clock
    no_lead = pages.decided_case("sub_nl:f0", lead=None)
    lead = pages.decided_case("sub_l:f0")
    store.record_search(candidate_list("sub_nc:f0", []))
    pending = store.record_search(candidate_list("sub_p:f0"))
    assert pending is not None

    soon = upcoming(store, POLICY, clock.now)
    assert [(u.face_id, u.rule, u.case_ids) for u in soon] == [
        ("sub_nc:f0", "no_candidate", ()), ("sub_nl:f0", "no_lead", (no_lead,)), ("sub_p:f0", "pending", (pending,))]
    assert [(u.due_at - clock.now).days for u in soon] == [31, 31, 90]
    store.close(lead, SUE, "charged", "crime-1")
    assert [(u.face_id, u.rule) for u in upcoming(store, POLICY, clock.now)][-1] == ("sub_l:f0", "closed_lead")
    assert [u.face_id for u in upcoming(store, POLICY, clock.now, limit=2)] == ["sub_nc:f0", "sub_nl:f0"]

    page = pages.as_("audrey").get("/retention").text
    assert "purged 31.0 days after its search" in page and rows(page, "upcoming-row") == 4
    assert "Nothing was purged yet" in page
    clock.advance(days=40)
    due = pages.as_("audrey").get("/retention").text
    assert "no_candidate: 1" in due and "no_lead: 1" in due and due.count("due now (next pass)") == 2
    run_retention(store, pages.blobs, POLICY, clock.now)
    after = pages.as_("sue").get("/retention").text
    assert rows(after, "purged-row") == 2 and rows(after, "upcoming-row") == 2
    assert "retention:" not in after and "sub_nc:f0" in after.split("What was purged")[1]


def test_upcoming_waits_for_every_case_of_a_probe_and_reads_only_the_soonest(pages: Pages) -> None:
    store, clock = pages.env.store, pages.env.clock
    first = store.record_search(candidate_list("sub_rs:f0", event_id="ev-1"))
    assert first is not None
    store.decide(first, ALICE, labels(2), "crime-1")
    store.decide(first, BOB, labels(2), "crime-1")
    clock.advance(days=10)
    again = store.record_search(candidate_list("sub_rs:f0", event_id="ev-2", trigger="re_search", re_search_of="gc-9"))
    assert again is not None
    [item] = upcoming(store, POLICY, clock.now)
    assert item.rule == "no_lead+pending" and item.case_ids == (first, again)
    assert item.due_at == clock.now + timedelta(days=90), "the later case's rule decides"
    store.decide(again, ALICE, labels(2, lead=1), "crime-1")
    store.decide(again, BOB, labels(2, lead=1), "crime-1")
    assert upcoming(store, POLICY, clock.now) == [], "an open lead keeps its probe"
    for i in range(5):
        clock.advance(hours=1)
        store.record_search(candidate_list(f"sub_many:f{i}", []))
    assert [u.face_id for u in upcoming(store, POLICY, clock.now, limit=3)] == [f"sub_many:f{i}" for i in range(3)]


# -- disclosure ----------------------------------------------------------------------------------------------------

def _exports(pages: Pages, case_id: int) -> list[dict[str, Any]]:
    return [e for e in pages.env.audit.export() if e["action"] == "export" and e["case_id"] == case_id]


def test_the_disclosure_pack_asks_why_and_each_export_is_audited(pages: Pages) -> None:
    case_id = pages.decided_case("sub_d:f0")
    sue = pages.as_("sue")
    for path in (f"/cases/{case_id}/disclosure", f"/cases/{case_id}/disclosure.pdf"):
        form = sue.get(path)
        assert form.status_code == 200 and 'id="d-reason" type="text" name="reason" required' in form.text
        assert sue.get(path, params={"reason": "ab"}).status_code == 422
        assert sue.get(path, params={"reason": "R" * 257}).status_code == 422
    assert _exports(pages, case_id) == []

    html = sue.get(f"/cases/{case_id}/disclosure", params={"reason": "CPS request 4411"})
    assert html.status_code == 200 and html.headers["cache-control"] == "no-store"
    assert "A candidate list is never an identification." in html.text and "<script" not in html.text
    assert rows(html.text, "pack-candidate") == 2 and rows(html.text, "pack-decision") == 2
    pdf = pages.as_("audrey").get(f"/cases/{case_id}/disclosure.pdf", params={"reason": "CPS request 4412"})
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF-") and "attachment" in pdf.headers["content-disposition"]
    assert [(e["actor"], e["reason"], e["details"]["format"]) for e in _exports(pages, case_id)] == [
        ("sue", "CPS request 4411", "html"), ("audrey", "CPS request 4412", "pdf")]


def test_only_decided_cases_have_a_pack_and_only_overseers_export_it(pages: Pages) -> None:
    open_case = pages.env.store.record_search(candidate_list("sub_o:f0"))
    assert open_case is not None
    pages.env.store.decide(open_case, ALICE, labels(2, lead=1), "crime-1")
    refused = pages.as_("sue").get(f"/cases/{open_case}/disclosure", params={"reason": "CPS request"})
    assert refused.status_code == 409 and "only lead and no_lead cases" in refused.text
    assert pages.as_("sue").get("/cases/999/disclosure.pdf", params={"reason": "CPS request"}).status_code == 404
    decided = pages.decided_case("sub_dd:f0")
    for who in ("alice", "bob", "root"):
        assert pages.as_(who).get(f"/cases/{decided}/disclosure", params={"reason": "CPS"}).status_code == 403
    assert _exports(pages, open_case) == [] and _exports(pages, decided) == []
