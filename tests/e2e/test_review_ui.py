"""The review pages in a real browser (Debian's chromium driven by Playwright) against the live stack: reviewer A
signs in, opens the oldest case of the queue, marks the candidate who is the same person a possible match with a
note (by keyboard) and submits; reviewer A may not verify it; a form posted without its CSRF token is refused;
reviewer B verifies blind, confirms, and then sees both decisions; the lead is on rfr.decisions.v1; an auditor finds
both decisions in the audit pages. axe-core checks the queue, case and audit pages for the basics (labels,
contrast, keyboard) in the same run, and the run saves the screenshots the README shows (docs/ui/)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect
from support.browser import axe_basics, chromium, describe
from support.review_e2e import PASSWORD, Still, add_users, api_client, case_of, decision_events, enrol, people, still
from support.review_e2e import submit as submit_stills

from rfr.core.settings import Settings

RETAILER = "ui-e2e-shop"
"""The stills of this module come from a retailer of its own: its cases are found in the shared queue by it."""
A, B, AUDITOR = "ui-reviewer-a", "ui-reviewer-b", "ui-auditor"
REF = "CR-2026-UI-0007"
NOTE_A = "same ear shape and hairline; scar above the left eyebrow"
NOTE_B = "agree: ears, jaw line and the eyebrow scar"
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "ui"
VIEWPORT = {"width": 1280, "height": 900}


@dataclass(frozen=True)
class UiCases:
    base: str
    stills: dict[int, Still]
    """case id -> the still it was made from (its truth: the enrolled subject who is the same person)."""


@pytest.fixture(scope="module")
def ui_cases(live_stack: Settings, lfw_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> UiCases:
    """Three LFW people enrolled (a range no other module uses), two stills of two of them submitted by
    :data:`RETAILER`, and the two cases they became; the users of this module."""
    add_users(live_stack, {A: "reviewer", B: "reviewer", AUDITOR: "auditor"})
    persons = people(lfw_dir, 330, 3)
    enrol(live_stack, tmp_path_factory.mktemp("ui-gallery"), persons, "custody images, PACE s.64A")
    stills = [still(photos[0], 40 + i, RETAILER) for i, photos in enumerate(persons[:2])]
    results = submit_stills(live_stack, stills)
    for s in stills:
        lists = results[s.submission_id].lists.values()
        assert any(c.subject_id == s.truth for cl in lists for c in cl.candidates), f"{s.truth} not a candidate"
    with api_client(live_stack, A) as client:
        cases = {case_of(client, s.submission_id): s for s in stills}
    return UiCases(f"http://{live_stack.review.http_host}:{live_stack.review.http_port}", cases)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


@pytest.fixture
def open_context(browser: Browser) -> Iterator[list[BrowserContext]]:
    """Contexts (one per person: their own cookies) closed after the test."""
    made: list[BrowserContext] = []
    yield made
    for context in made:
        context.close()


def signed_in(browser: Browser, contexts: list[BrowserContext], base: str, name: str) -> Page:
    """A fresh browser context signed in as ``name`` through the sign-in form; on the queue."""
    context = browser.new_context(base_url=base, viewport=VIEWPORT)  # type: ignore[arg-type]
    contexts.append(context)
    page = context.new_page()
    answer = page.goto("/login")
    assert answer is not None and "script-src 'self'" in answer.headers.get("content-security-policy", "")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/queue"))
    expect(page.get_by_test_id("who")).to_have_text(name)
    return page


def accessible(page: Page, what: str) -> None:
    """No violation of the basics (labels, contrast, keyboard; WCAG 2 A/AA) on ``page``."""
    violations = axe_basics(page)
    assert not violations, f"accessibility of the {what} page:\n{describe(violations)}"


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name), full_page=True)


def open_case(page: Page, case_id: int) -> None:
    """From the queue: the case's link, then the reason (case / crime reference) the view is recorded with."""
    page.get_by_test_id(f"open-case-{case_id}").click()
    page.get_by_label("Case or crime reference").fill(REF)
    page.get_by_role("button", name="Open the case").click()
    expect(page.get_by_test_id("case-state")).to_be_visible()


def candidate_ranks(page: Page) -> dict[str, int]:
    """subject id -> rank, as the case page lists the candidates."""
    ranks = {}
    for article in page.locator("article.candidate").all():
        heading = article.locator("h3").first.inner_text()
        found = re.match(r"Candidate (\d+): (.+)", heading.strip())
        assert found, heading
        ranks[found.group(2).strip()] = int(found.group(1))
    return ranks


def label_others(page: Page, ranks: dict[str, int], truth: str, note: str) -> None:
    """Every candidate but ``truth``: not a match, with a note (by mouse)."""
    for subject, rank in ranks.items():
        if subject != truth:
            page.locator(f"#label-{rank}-not_match").check()
            page.locator(f"#note-{rank}").fill(f"{note} (not {subject})")


def test_two_reviewers_make_a_lead_and_an_auditor_finds_it(
        browser: Browser, ui_cases: UiCases, live_stack: Settings, open_context: list[BrowserContext]) -> None:
    base = ui_cases.base
    # --- reviewer A: the queue, oldest first, filtered to this module's retailer -----------------------------
    page_a = signed_in(browser, open_context, base, A)
    page_a.get_by_label("Retailer").fill(RETAILER)
    page_a.get_by_role("button", name="Filter").click()
    rows = page_a.get_by_test_id("queue-row")
    expect(rows).to_have_count(len(ui_cases.stills))
    shown = [int(r.get_attribute("data-case-id") or 0) for r in rows.all()]
    assert shown == sorted(ui_cases.stills), shown  # oldest (first made) first
    accessible(page_a, "queue")
    shot(page_a, "queue.png")

    case_id = shown[0]
    truth = ui_cases.stills[case_id].truth
    open_case(page_a, case_id)
    expect(page_a.get_by_test_id("not-identification")).to_be_visible()
    expect(page_a.get_by_test_id("case-state")).to_have_attribute("data-state", "pending")
    ranks = candidate_ranks(page_a)
    rank = ranks[truth]
    page_a.locator("h1").click()
    page_a.keyboard.press("z")  # zoom the still, and back
    expect(page_a.locator("#still-wrap")).to_have_class(re.compile(r"\bzoomed\b"))
    page_a.keyboard.press("z")
    expect(page_a.locator("#still-wrap")).not_to_have_class(re.compile(r"\bzoomed\b"))
    page_a.keyboard.press("?")  # the shortcuts' help, and closed again
    expect(page_a.get_by_test_id("shortcuts")).to_have_attribute("open", "")
    page_a.keyboard.press("?")
    # the decision flow by keyboard: j to the candidate, 1 = possible match, n = its note, Esc, s = submit
    for _ in range(rank):
        page_a.keyboard.press("j")
    expect(page_a.locator(f"#candidate-{rank}")).to_be_focused()
    page_a.keyboard.press("1")
    expect(page_a.locator(f"#label-{rank}-possible_match")).to_be_checked()
    page_a.keyboard.press("n")
    expect(page_a.locator(f"#note-{rank}")).to_be_focused()
    page_a.keyboard.type(NOTE_A)
    page_a.keyboard.press("Escape")
    label_others(page_a, ranks, truth, "different nose and ears")
    page_a.locator(f"#candidate-{rank}").focus()
    accessible(page_a, "case")
    shot(page_a, "case.png")
    page_a.keyboard.press("s")
    expect(page_a.get_by_test_id("done")).to_be_visible()
    expect(page_a.get_by_test_id("case-state")).to_have_attribute("data-state", "awaiting_verification")

    # --- reviewer A may not verify their own decision: no form, and a posted one is refused --------------------
    expect(page_a.get_by_test_id("own-decision")).to_be_visible()
    expect(page_a.get_by_test_id("decision-form")).to_have_count(0)
    token = page_a.locator('input[name="csrf"]').first.get_attribute("value") or ""
    own = page_a.request.post(f"/cases/{case_id}/decide", form=_decision_form(ranks, truth, csrf=token))
    assert own.status == 403 and "Not yours to verify" in own.text(), (own.status, own.text()[:500])

    # --- reviewer B: a form without its CSRF token is refused; then verifies blind and confirms --------------
    page_b = signed_in(browser, open_context, base, B)
    forged = page_b.request.post(f"/cases/{case_id}/decide", form=_decision_form(ranks, truth))
    assert forged.status == 403 and "CSRF" in forged.text(), (forged.status, forged.text()[:500])
    page_b.goto("/queue?" + urlencode({"retailer_id": RETAILER, "mine": "verify"}))
    expect(page_b.get_by_test_id("queue-row")).to_have_count(1)
    open_case(page_b, case_id)
    expect(page_b.get_by_test_id("blind")).to_be_visible()
    expect(page_b.get_by_test_id("no-decisions")).to_be_visible()
    expect(page_b.get_by_test_id("decision")).to_have_count(0)
    assert NOTE_A not in page_b.content() and A not in page_b.locator("main").inner_text()  # blind
    assert candidate_ranks(page_b) == ranks
    page_b.locator(f"#label-{rank}-possible_match").check()
    page_b.locator(f"#note-{rank}").fill(NOTE_B)
    label_others(page_b, ranks, truth, "not the same person")
    page_b.get_by_test_id("submit-decision").click()
    expect(page_b.get_by_test_id("case-state")).to_have_attribute("data-state", "lead")
    expect(page_b.get_by_test_id("decision")).to_have_count(2)  # both decisions, now that B has decided
    expect(page_b.get_by_test_id("decision-actor")).to_have_text([A, B])
    assert NOTE_A in page_b.content() and NOTE_B in page_b.content()

    # --- the lead goes to the case systems ---------------------------------------------------------------------
    events = decision_events(live_stack, {case_id})
    assert len({e.event_id for e in events.get(case_id, [])}) == 1, events
    lead = events[case_id][0]
    assert lead.outcome == "lead" and lead.lead is not None and lead.lead.subject_id == truth
    assert [(d.reviewer, d.stage) for d in lead.decisions] == [(A, "first"), (B, "verification")]

    # --- an auditor finds both decisions in the audit pages ----------------------------------------------------
    page_c = signed_in(browser, open_context, base, AUDITOR)
    page_c.get_by_test_id("nav-audit").click()
    page_c.get_by_label("Case id").fill(str(case_id))
    page_c.get_by_test_id("audit-search").click()
    audit_rows = page_c.get_by_test_id("audit-row")
    expect(audit_rows.first).to_be_visible()
    cells = [[c.strip() for c in row.locator("td").all_inner_texts()] for row in audit_rows.all()]
    found = {(who, what) for _, _, who, _, what, *_ in cells}
    assert {(A, "decision"), (B, "verification"), (A, "case_view"), (B, "case_view")} <= found, cells
    accessible(page_c, "audit")
    shot(page_c, "audit.png")
    decision_row = audit_rows.filter(has=page_c.locator("td", has_text=re.compile(r"^verification$")))
    decision_row.first.locator("a").first.click()
    expect(page_c.get_by_test_id("audit-entry")).to_contain_text(B)
    expect(page_c.get_by_test_id("audit-details")).to_contain_text(NOTE_B)


def _decision_form(ranks: dict[str, int], truth: str, csrf: str | None = None) -> dict[str, str | float | bool]:
    """The case page's decision form as posted (``csrf``: its token; None: left out)."""
    form: dict[str, str | float | bool] = {"reason": REF}
    for subject, rank in ranks.items():
        form[f"label-{rank}"] = "possible_match" if subject == truth else "not_match"
        form[f"note-{rank}"] = "posted by hand"
    if csrf is not None:
        form["csrf"] = csrf
    return form
