"""The disclosure pack on SQLite and PostgreSQL: a decided case's probe, still with its face box, every candidate
with their photo, each decision, the search and the case's audit trail, as gathered, as the printable page shows it
and as the PDF's text reads; each export audited with its reason; a purged probe named as such."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support.pdfs import pdf_text
from support.review_data import ALICE, AUDREY, BOB, POLICY, SUE, Env, candidate_list, enrolment, labels, unit
from support.review_pages import api_context, users_of
from support.stills import jpeg

from rfr.core.blobstore import FileBlobStore
from rfr.core.schemas import CandidateList
from rfr.review import disclosure as dc
from rfr.review import workflow as wf
from rfr.review.retention import run_retention
from rfr.review.users import Principal, Role
from services.review.app import create_app
from services.review.web.disclosure_pdf import pack_pdf

STILL = jpeg(320, 240, seed=7)
CROP = jpeg(112, 112, seed=8)


def lead_case(env: Env, blobs: FileBlobStore) -> int:
    """A lead on subj-1 (rank 1), decided by alice and confirmed by bob; subj-1's photo kept, subj-2's erased."""
    photos = [blobs.put(jpeg(60, 72, seed=1)), blobs.put(jpeg(60, 72, seed=2))]
    env.store.record_gallery_change(enrolment("gc-1", [("gf-subj-1", "subj-1", unit((1, 1.0))),
                                                       ("gf-subj-2", "subj-2", unit((2, 1.0)))], photo_refs=photos))
    env.store.record_gallery_change(enrolment("gc-2", [("gf-subj-2", "subj-2", None)], action="erased"))
    cl: CandidateList = candidate_list("sub_pack:f0", still_ref=blobs.put(STILL), case_ref="CR-2025-0042")
    cl = cl.model_copy(update={"probe": cl.probe.model_copy(update={"crop_jpeg": CROP})})
    case_id = env.store.record_search(cl)
    assert isinstance(case_id, int)
    env.store.decide(case_id, ALICE, labels(2, lead=1), "CR-2025-0042", "same scar over the left eyebrow")
    env.store.decide(case_id, BOB, labels(2, lead=1), "CR-2025-0042", "agree: ear shape and scar")
    return case_id


def test_the_pack_holds_probe_still_candidates_decisions_search_and_audit(env: Env, blobs: FileBlobStore) -> None:
    case_id = lead_case(env, blobs)
    pack = dc.gather(env.store, blobs, case_id, AUDREY, "  CPS request 77 ", "html")

    assert pack.case.state == wf.CaseState.LEAD and pack.case.lead_subject_id == "subj-1"
    assert pack.crop is not None and pack.crop.data == CROP and pack.crop.size == (112, 112)
    assert pack.still is not None and pack.still.data == STILL and pack.still.size == (320, 240)
    assert pack.case.probe.box == {"x": 10.0, "y": 20.0, "width": 80.0, "height": 80.0}
    first, second = pack.candidates
    assert first.photo is not None and first.photo.size == (60, 72) and first.photo_status == "kept"
    assert second.photo is None and "erased" in second.photo_status
    assert [(d.actor, d.stage, d.outcome, d.note) for d in pack.case.decisions] == [
        ("alice", "first", "lead", "same scar over the left eyebrow"),
        ("bob", "verification", "lead", "agree: ear shape and scar")]
    assert [label["label"] for label in pack.case.decisions[0].labels] == ["possible_match", "not_match"]
    search = pack.case.search
    assert (search.watch_lists, search.threshold, search.model_id, search.trigger) == (
        ["custody"], 0.6, "facenet-test", "submission")
    actions = [e["action"] for e in pack.audit]
    assert actions == ["search", "case_created", "decision", "verification", "export"]
    export = pack.audit[-1]
    assert export["seq"] == pack.export_seq and export["actor"] == "audrey" and export["reason"] == "CPS request 77"
    assert export["details"]["what"] == "disclosure_pack" and export["details"]["format"] == "html"
    assert pack.reason == "CPS request 77" and "never an identification" in pack.notice
    assert env.audit.verify().ok


def test_the_pdf_text_has_the_notice_the_case_and_every_decision(env: Env, blobs: FileBlobStore) -> None:
    case_id = lead_case(env, blobs)
    pdf = pack_pdf(dc.gather(env.store, blobs, case_id, SUE, "CPS request 78", "pdf"))
    assert pdf.startswith(b"%PDF-") and pdf.count(b"/Subtype /Image") >= 3  # crop, still, the kept photo
    text = pdf_text(pdf)
    assert dc.NOTICE in text
    assert f"Disclosure pack - case {case_id}" in text and "CR-2025-0042" in text and "CPS request 78" in text
    for line in ("first decision by alice (reviewer)", "verification decision by bob (reviewer)",
                 "same scar over the left eyebrow", "agree: ear shape and scar", "rank 1 (subj-1): possible_match",
                 "Rank 2: subj-2", "not kept, or erased from the gallery", "Threshold (cosine) 0.6",
                 "Model facenet-test", "Watch-lists searched custody"):
        assert line in text, line
    assert re.search(r"#\d+ .* sue \(supervisor\) export reason: CPS request 78", text)


def test_the_pdf_prints_text_as_given_and_numbers_its_pages(env: Env, blobs: FileBlobStore, tmp_path: Path) -> None:
    photos = FileBlobStore(tmp_path / "blobs" / "gallery")  # the gallery photos' own store
    env.store.record_gallery_change(enrolment("gc-nb", [("gf-REF-{nb}", "REF-{nb}", unit((1, 1.0)))],
                                              photo_refs=[photos.put(jpeg(60, 72, seed=1))]))
    case_id = env.store.record_search(candidate_list("sub_nb:f0", (("REF-{nb}", 0.9), ("subj-2", 0.8)),
                                                     still_ref=blobs.put(STILL)))
    assert isinstance(case_id, int)
    marks = [wf.CandidateLabel(1, wf.Label.POSSIBLE_MATCH, "ear shape matches {nb} points"), *labels(2)[1:]]
    env.store.decide(case_id, ALICE, marks, "CR-{nb}", "first look")
    env.store.decide(case_id, BOB, marks, "CR-{nb}", "agree")
    pack = dc.gather(env.store, blobs, case_id, SUE, "CPS request {nb}", "pdf", photos=photos)
    assert [c.photo_status for c in pack.candidates] == ["kept", "not kept, or erased from the gallery"]
    pdf = pack_pdf(pack)
    text = pdf_text(pdf)
    for given in ("ear shape matches {nb} points", "REF-{nb}", "CPS request {nb}"):
        assert given in text, given  # fpdf2's page-count alias is off: nothing is rewritten
    pages = pdf.count(b"/Type /Page\n") or len(re.findall(rb"/Type\s*/Page\b", pdf))
    footers = re.findall(r"identification - page (\d+)/(\d+)", text)
    assert pages >= 2 and footers == [(str(n), str(pages)) for n in range(1, pages + 1)]


def test_the_printable_page_shows_the_pack_inline(env: Env, blobs: FileBlobStore, tmp_path: Path) -> None:
    case_id = lead_case(env, blobs)
    users = users_of(env, {"sue": Role.SUPERVISOR}, "a long enough password")
    app = create_app(api_context(env, users, blobs))
    client = TestClient(app)
    client.cookies.set("rfr_session", users.issue_session(Principal("sue", Role.SUPERVISOR)))
    page = client.get(f"/cases/{case_id}/disclosure", params={"reason": "CPS request 79"}).text
    assert page.count('src="data:image/jpeg;base64,') == 2 and page.count('href="data:image/jpeg;base64,') == 1
    assert '<svg class="still" viewBox="0 0 320 240"' in page and '<rect x="10.0" y="20.0" width="80.0"' in page
    for text in (dc.NOTICE, "CR-2025-0042", "CPS request 79", "same scar over the left eyebrow", "subj-2",
                 "not kept, or erased from the gallery", "facenet-test", '<link rel="stylesheet" href="/static/'):
        assert text in page, text
    assert 'style="' not in page and "<script" not in page


def test_a_purged_probe_is_named_in_the_pack(env: Env, blobs: FileBlobStore) -> None:
    case_id = env.store.record_search(candidate_list("sub_gone:f0", still_ref=blobs.put(STILL)))
    assert case_id is not None
    env.store.decide(case_id, ALICE, labels(2), "crime-1")
    env.store.decide(case_id, BOB, labels(2), "crime-1")
    run_retention(env.store, blobs, POLICY, env.clock.advance(days=32))
    pack = dc.gather(env.store, blobs, case_id, SUE, "CPS request 80", "pdf")
    assert pack.crop is None and pack.still is None
    assert pack.crop_status == pack.still_status == "purged by retention"
    assert [e["action"] for e in pack.audit][-2:] == ["purge", "export"]
    text = pdf_text(pack_pdf(pack))
    assert "Still: purged by retention" in text and "Outcome no_lead" in text


@pytest.mark.parametrize(("who", "reason", "error"), [
    (Principal("alice", Role.REVIEWER), "CPS request", wf.NotPermitted),
    (Principal("root", Role.ADMINISTRATOR), "CPS request", wf.NotPermitted),
    (SUE, " x ", wf.DecisionRefused),
])
def test_refused_exports_leave_no_entry(env: Env, blobs: FileBlobStore, who: Principal, reason: str,
                                        error: type[Exception]) -> None:
    case_id = lead_case(env, blobs)
    before = len(list(env.audit.export()))
    with pytest.raises(error):
        dc.gather(env.store, blobs, case_id, who, reason, "pdf")
    assert len(list(env.audit.export())) == before

