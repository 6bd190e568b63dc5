"""The review pages through FastAPI's TestClient on a real SQLite review store: reviewer A takes the oldest case
and marks a possible match; reviewer B verifies blind and confirms (a lead, published); one's own decision cannot
be verified; a case is taken by one reviewer at a time; disagreements reach the supervisor's page."""

from __future__ import annotations

import html as html_lib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.review_data import SUE, enrolment, unit
from support.review_pages import Pages, by_testid, csrf_of, make_pages, pages_fixture
from support.stills import jpeg

from rfr.core.settings import ReviewSettings, Settings


@pytest.fixture
def pages(tmp_path: Path) -> Iterator[Pages]:
    yield from pages_fixture(tmp_path)


def _state(html: str) -> str:
    found = re.search(r'data-testid="case-state" data-state="(\w+)"', html)
    assert found, "no case state on the page"
    return found.group(1)


def test_reviewer_a_decides_and_reviewer_b_confirms_blind(pages: Pages) -> None:
    oldest = pages.new_case("sub_a:f0", case_ref="crime-9")
    pages.env.clock.advance(minutes=5)
    newer = pages.new_case("sub_b:f0")
    alice = pages.sign_in("alice")
    queue = alice.get("/queue").text
    rows = by_testid(queue, "open-case-" + str(oldest)) + by_testid(queue, "open-case-" + str(newer))
    assert rows == [f"Case {oldest}", f"Case {newer}"]
    assert queue.index(f"open-case-{oldest}") < queue.index(f"open-case-{newer}")  # oldest first
    assert by_testid(queue, "count-pending") == ["2"]
    ask = alice.get(f"/cases/{oldest}?ref=crime-9")
    assert 'data-testid="reason-form"' in ask.text and 'value="crime-9"' in ask.text
    assert "case_view" not in pages.env.actions()  # asking the reason is not a view yet

    page = pages.open_case(alice, oldest, "crime-9")
    html = page.text
    assert _state(html) == "pending"
    assert 'data-testid="not-identification"' in html and 'data-testid="decision-form"' in html
    for rank in (1, 2):
        assert f'<label for="label-{rank}-possible_match">' in html and f'<label for="note-{rank}">' in html
    assert 'data-testid="score-1"' in html and 'data-testid="quality-warning"' in html  # sharpness 150 < 300
    resp = pages.decide(alice, oldest, 1, reason="crime-9")
    assert resp.status_code == 303
    assert resp.headers["location"] == f"/cases/{oldest}?reason=crime-9&done=decided"
    after = alice.get(resp.headers["location"]).text
    assert _state(after) == "awaiting_verification"
    assert by_testid(after, "done") == ["Your decision is recorded."]
    assert 'data-testid="own-decision"' in after and 'data-testid="decision-form"' not in after
    assert by_testid(after, "decision-actor") == ["alice"]

    bob = pages.sign_in("bob")
    assert by_testid(bob.get("/queue").text, "count-verifiable") == ["1"]  # the signal, without the filter on
    assert by_testid(alice.get("/queue").text, "count-verifiable") == ["0"]  # not hers to verify
    assert by_testid(bob.get("/queue?mine=verify").text, "open-case-" + str(oldest)) == [f"Case {oldest}"]
    blind = pages.open_case(bob, oldest, "crime-9").text
    assert 'data-testid="blind"' in blind and by_testid(blind, "decision-actor") == []
    assert "alice" not in blind
    resp = pages.decide(bob, oldest, 1, reason="crime-9")
    assert resp.status_code == 303
    final = bob.get(resp.headers["location"]).text
    assert _state(final) == "lead"
    assert by_testid(final, "decision-actor") == ["alice", "bob"]  # both, once bob has decided
    assert pages.finals == [1]
    events = pages.env.store.pending_outbox()
    assert [e.key for e in events] == [f"case-{oldest}"]
    actions = pages.env.actions()
    assert actions.count("decision") == 1 and actions.count("verification") == 1
    assert pages.sign_in("audrey").get("/queue").status_code == 200


def test_a_reviewer_cannot_verify_their_own_decision(pages: Pages) -> None:
    case_id = pages.new_case("sub_a:f0")
    alice = pages.sign_in("alice")
    assert pages.decide(alice, case_id, 1).status_code == 303
    resp = pages.decide(alice, case_id, 1)
    assert resp.status_code == 403
    assert by_testid(resp.text, "error-title") == ["Not yours to verify"]
    assert "a different person verifies it" in by_testid(resp.text, "error-message")[0]
    assert by_testid(resp.text, "error-back") == ["Back"]
    assert pages.env.actions().count("verification") == 0


def test_a_refused_decision_says_why(pages: Pages) -> None:
    case_id = pages.new_case("sub_a:f0")
    alice = pages.sign_in("alice")
    resp = pages.decide(alice, case_id, 1, extra={"label-2": "possible_match"})
    assert resp.status_code == 422 and "all possible matches" in resp.text
    page = pages.open_case(alice, case_id)
    resp = alice.post(f"/cases/{case_id}/decide", data={"csrf": csrf_of(page.text), "reason": "crime-1",
                                                          "label-1": "not_match", "note-1": "no", "note-2": ""})
    assert resp.status_code == 422 and "candidate(s) 2 have none" in resp.text
    resp = pages.decide(alice, case_id, None, reason="   ")
    assert resp.status_code == 422 and "case or crime reference" in resp.text


def test_a_case_is_taken_by_one_reviewer_at_a_time(pages: Pages) -> None:
    case_id = pages.new_case("sub_a:f0")
    alice, bob = pages.sign_in("alice"), pages.sign_in("bob")
    pages.open_case(alice, case_id)
    assert by_testid(bob.get("/queue").text, f"taken-by-{case_id}") == ["taken by alice"]
    seen = pages.open_case(bob, case_id).text
    assert by_testid(seen, "taken-by")[0].startswith("Taken by alice until 2025-03-01 12:15 UTC")
    assert 'data-testid="decision-form"' not in seen
    resp = pages.decide(bob, case_id, None)
    assert resp.status_code == 409 and by_testid(resp.text, "error-title") == ["Taken by another reviewer"]
    # alice gives it back: bob takes it
    page = pages.open_case(alice, case_id)
    assert alice.post(f"/cases/{case_id}/release", data={"csrf": csrf_of(page.text)}).status_code == 303
    assert 'data-testid="decision-form"' in pages.open_case(bob, case_id).text
    # bob's claim runs out: alice may take it again
    pages.env.clock.advance(minutes=16)
    assert 'data-testid="decision-form"' in pages.open_case(alice, case_id).text
    assert pages.decide(alice, case_id, None).status_code == 303
    assert by_testid(bob.get("/queue").text, f"taken-by-{case_id}") == ["—"]  # a decision ends the claim


def test_a_reviewer_takes_at_most_three_cases_the_next_is_shown_not_taken(pages: Pages) -> None:
    cases = [pages.new_case(f"sub_h{i}:f0") for i in range(5)]
    alice, bob = pages.sign_in("alice"), pages.sign_in("bob")
    for case_id in cases:
        pages.open_case(alice, case_id)
    queue = bob.get("/queue").text
    assert [by_testid(queue, f"taken-by-{c}") for c in cases] == [["taken by alice"]] * 3 + [["—"]] * 2
    fourth = pages.open_case(alice, cases[3]).text  # shown, not taken: still hers to decide while nobody holds it
    assert 'data-testid="decision-form"' in fourth and 'data-testid="taken-by"' not in fourth
    assert pages.decide(bob, cases[4], None).status_code == 303  # free for others
    assert pages.decide(alice, cases[0], None).status_code == 303  # a decision frees one of her three
    pages.open_case(alice, cases[3])
    assert by_testid(bob.get("/queue").text, f"taken-by-{cases[3]}") == ["taken by alice"]


def test_a_supervisor_who_escalates_cannot_resolve_alone(pages: Pages) -> None:
    case_id = pages.new_case("sub_s:f0")
    sue = pages.sign_in("sue")
    page = pages.open_case(sue, case_id).text
    resp = sue.post(f"/cases/{case_id}/escalate", data={"csrf": csrf_of(page), "reason": "crime-1",
                                                        "escalation_note": "mine now"})
    assert resp.status_code == 303
    page = pages.open_case(sue, case_id).text
    assert _state(page) == "escalated" and 'data-testid="decision-form"' not in page
    resp = pages.decide(sue, case_id, 1, action="resolve")
    assert resp.status_code == 403 and by_testid(resp.text, "error-title") == ["Not yours to verify"]
    assert pages.env.store.queue(state="lead") == []


def test_disagreement_reaches_the_supervisor_who_resolves_it(pages: Pages) -> None:
    case_id = pages.new_case("sub_a:f0")
    alice, bob, sue = pages.sign_in("alice"), pages.sign_in("bob"), pages.sign_in("sue")
    assert pages.decide(alice, case_id, 1).status_code == 303
    assert pages.decide(bob, case_id, None).status_code == 303
    board = sue.get("/supervisor").text
    assert by_testid(board, f"open-case-{case_id}") == [f"Case {case_id}"]
    page = pages.open_case(sue, case_id).text
    assert 'action="/cases/1/resolve"' in page and by_testid(page, "decision-actor") == ["alice", "bob"]
    resp = pages.decide(sue, case_id, 2, action="resolve")
    assert resp.status_code == 303
    assert _state(sue.get(resp.headers["location"]).text) == "lead"
    assert "No case is escalated." in sue.get("/supervisor").text
    closing = pages.open_case(sue, case_id).text
    assert by_testid(closing, "disclosure-link") == ["Disclosure pack"]  # decided: the pack is one click away
    assert by_testid(pages.open_case(alice, case_id).text, "disclosure-link") == []  # not for the deciders
    resp = sue.post(f"/cases/{case_id}/close", data={"csrf": csrf_of(closing), "reason": "crime-1",
                                                     "close_note": "arrested and charged"})
    assert resp.status_code == 303 and "case_closed" in pages.env.actions()


def test_escalation_and_the_auditors_read_only_view(pages: Pages) -> None:
    case_id = pages.new_case("sub_a:f0")
    alice = pages.sign_in("alice")
    page = pages.open_case(alice, case_id).text
    resp = alice.post(f"/cases/{case_id}/escalate", data={"csrf": csrf_of(page), "reason": "crime-1",
                                                          "escalation_note": "twins on the list"})
    assert resp.status_code == 303 and resp.headers["location"].endswith("done=escalated")
    audrey = pages.sign_in("audrey")
    seen = pages.open_case(audrey, case_id).text
    assert _state(seen) == "escalated" and 'data-testid="decision-form"' not in seen
    assert 'data-testid="escalate-form"' not in seen
    assert pages.env.store.case(case_id, SUE, "x").claimed_by is None  # auditors never take a case


def test_queue_filters_and_hidden_scores(tmp_path: Path) -> None:
    pages = make_pages(tmp_path, Settings(review=ReviewSettings(show_scores=False, reliable_sharpness=100.0)))
    first = pages.new_case("sub_a:f0", watch_list="custody", retailer_id="shop-1")
    pages.env.clock.advance(hours=3)
    second = pages.new_case("sub_b:f0", watch_list="wanted", retailer_id="shop-2")
    pages.env.clock.advance(hours=1)
    alice = pages.sign_in("alice")

    def listed(query: str) -> list[str]:
        return by_testid(alice.get("/queue" + query).text, "queue-row")

    assert len(listed("")) == 2
    assert by_testid(alice.get("/queue?watch_list=wanted").text, f"open-case-{second}") == [f"Case {second}"]
    assert by_testid(alice.get("/queue?watch_list=wanted").text, f"open-case-{first}") == []
    assert by_testid(alice.get("/queue?retailer_id=shop-1").text, f"open-case-{first}") == [f"Case {first}"]
    assert by_testid(alice.get("/queue?older_than_h=2").text, f"open-case-{second}") == []
    assert by_testid(alice.get("/queue?quality=low").text, "queue-empty") == ["No case matches."]
    assert by_testid(alice.get("/queue?state=bogus&older_than_h=x").text, "queue-row") != []
    page = pages.open_case(alice, first).text
    assert 'data-testid="score-1"' not in page and 'data-testid="quality-warning"' not in page
    assert "Top score" not in alice.get("/queue").text
    pages.env.store.engine.dispose()


def test_the_images_of_a_case_page_are_audited_with_the_reason_it_was_opened_with(pages: Pages) -> None:
    case_id = pages.new_case("sub_a:f0", still_ref=pages.ctx.blobs.put(jpeg(64, 48, seed=3)))
    photo = pages.ctx.photo_store.put(jpeg(40, 48, seed=4))
    pages.env.store.record_gallery_change(enrolment("gc-1", [("gf-subj-1", "subj-1", unit((1, 1.0)))],
                                                    photo_refs=[photo]))
    audrey = pages.sign_in("audrey")
    page = pages.open_case(audrey, case_id, "CR 9/25 & co").text
    sources = sorted({html_lib.unescape(src) for src in re.findall(r'<img[^>]* src="([^"]+)"', page)})
    assert sources == [f"/cases/{case_id}/probe.jpg?reason=CR+9%2F25+%26+co",
                       f"/cases/{case_id}/still?reason=CR+9%2F25+%26+co",
                       f"/gallery-photos/gf-subj-1?case_id={case_id}&reason=CR+9%2F25+%26+co"]
    for src in sources:
        resp = audrey.get(src)
        assert resp.status_code == 200 and resp.headers["cache-control"] == "no-store"
    reads = pages.env.audit.query(actor="audrey", limit=3)
    seen = sorted((e["action"], e["case_id"], e["reason"], json.dumps(e["details"], sort_keys=True)) for e in reads)
    assert seen == [
        ("case_view", case_id, "CR 9/25 & co", '{"part": "probe", "via": "pages"}'),
        ("case_view", case_id, "CR 9/25 & co", '{"part": "still", "via": "pages"}'),
        ("photo_view", case_id, "CR 9/25 & co", '{"gallery_face_id": "gf-subj-1", "via": "pages"}')]
    assert audrey.get(f"/cases/{case_id}/probe.jpg").status_code == 200  # without the page's reason
    assert pages.env.audit.query(actor="audrey", limit=1)[0]["reason"] == f"image of case {case_id}"


def test_page_forms_keep_the_apis_bounds(pages: Pages) -> None:
    case_id = pages.new_case("sub_a:f0")
    alice = pages.sign_in("alice")
    too_long = {"note": "N" * 4001, "reason": "R" * 257, "note-1": "n" * 4001,
                **{f"label-{r}": "not_match" for r in range(1, 102)}}
    for field, value in too_long.items():
        extra = {k: v for k, v in too_long.items() if k.startswith("label-")} if field.startswith("label-") else {
            field: value}
        resp = pages.decide(alice, case_id, 1, extra=extra)
        assert resp.status_code == 422 and by_testid(resp.text, "error-title") == ["Too long"], field
        if field.startswith("label-"):
            break
    sue = pages.sign_in("sue")
    for who, path, form in ((alice, "escalate", {"escalation_note": "E" * 4001}),
                            (alice, "escalate", {"escalation_note": "twins", "reason": "R" * 257}),
                            (sue, "close", {"close_note": "C" * 4001})):
        page = pages.open_case(who, case_id).text
        resp = who.post(f"/cases/{case_id}/{path}", data={"csrf": csrf_of(page), "reason": "crime-1", **form})
        assert resp.status_code == 422 and "is at most" in resp.text, path
    assert alice.get(f"/cases/{case_id}", params={"reason": "R" * 257}).status_code == 422
    assert [a for a in pages.env.actions() if a in ("decision", "escalation", "case_closed")] == []
    resp = pages.decide(alice, case_id, 1, reason="R" * 256, extra={"note": "N" * 4000, "note-1": "n" * 4000,
                                                                     "label-\u00b2": "not_match"})
    assert resp.status_code == 303  # at the bounds; a field 'label-²' is no candidate's (ignored, not a 500)
    decision = pages.env.audit.query(action="decision")[0]
    assert decision["reason"] == "R" * 256 and len(decision["details"]["note"]) == 4000
