"""The cluster pages in a real browser (Debian's chromium driven by Playwright) against the live stack: three stills
of one LFW person nobody enrolled, submitted at three stores of a retailer of this module's own, get no candidate;
a ClusterEvent naming their faces (and one stranger's) is produced on rfr.clusters.v1 as the cluster service would;
the review service records it; a reviewer finds it on /clusters, sees the crops side by side with the notice, ticks
the stranger out (split), confirms the rest and searches the gallery on demand; axe-core checks the cluster page.

The event is produced here, not left to the cluster service, so that this test pins the review side only (the
cluster service's own end-to-end test checks which stills it groups)."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect
from support.browser import axe_basics, chromium, describe
from support.review_e2e import PASSWORD, add_users, people, review_base, still
from support.review_e2e import submit as submit_stills

from rfr.core.cluster_messages import ClusterEvent, ClusterRuleInfo, ClusterSighting
from rfr.core.kafka import DeliveryTracker, Output, make_producer
from rfr.core.schemas import CandidateList, template_bytes, template_vector
from rfr.core.settings import Settings
from rfr.core.topics import Topics

RETAILER = "ui-cluster-shop"
REVIEWER = "ui-cluster-reviewer"
VIEWPORT = {"width": 1280, "height": 900}
SHOT = Path(__file__).resolve().parents[2] / "docs" / "ui" / "cluster.png"
"""The screenshot of the cluster page the README shows, saved by each run."""


def _unknown_lists(live_stack: Settings, lfw_dir: Path) -> list[CandidateList]:
    """One no-candidate list per still: three of the person, one of a stranger (LFW range 360.. used by no other
    module), each still at a store of its own."""
    person, stranger = people(lfw_dir, 360, 2)
    shots = [(still(photo, 70 + i, RETAILER), f"store-{i}") for i, photo in enumerate(person[:3])]
    shots.append((still(stranger[0], 79, RETAILER), "store-9"))
    lists = []
    for s, store in shots:
        result = submit_stills(live_stack, [s], store=store)[s.submission_id]
        found = [cl for cl in result.lists.values() if cl.outcome == "no_candidate"]
        assert found, f"{s.truth}: no face without candidate in {s.submission_id}"
        lists.append(found[0])
    return lists


def _event(lists: list[CandidateList], settings: Settings) -> ClusterEvent:
    vectors = np.stack([template_vector(cl.probe.template) for cl in lists])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    fused = vectors.mean(axis=0)
    fused /= np.linalg.norm(fused)
    sightings = [ClusterSighting(
        face_id=cl.face_id, submission_id=cl.submission_id, retailer_id=cl.meta.retailer_id,
        store_id=cl.meta.store_id, camera_id=cl.meta.camera_id, captured_at=cl.meta.captured_at,
        still_ref=cl.probe.still_ref, box=cl.probe.box, similarity=float(v @ fused))
        for cl, v in zip(lists, vectors, strict=True)]
    c = settings.cluster
    cluster_id = f"ui-{uuid.uuid4().hex[:12]}"
    return ClusterEvent(event_id=f"{cluster_id}:1", cluster_id=cluster_id, revision=1, model_id=lists[0].model_id,
                        sightings=sightings, template=template_bytes(fused), rule=ClusterRuleInfo(
                            link_threshold=c.link_threshold, merge_threshold=c.merge_threshold,
                            min_sightings=c.min_sightings, min_stores=c.min_stores))


@pytest.fixture(scope="module")
def reported(live_stack: Settings, lfw_dir: Path) -> tuple[ClusterEvent, str]:
    """The ClusterEvent produced, and the stranger's face id."""
    add_users(live_stack, {REVIEWER: "reviewer"}, PASSWORD)
    lists = _unknown_lists(live_stack, lfw_dir)
    event = _event(lists, live_stack)
    tracker = DeliveryTracker(make_producer(live_stack.kafka))
    tracker.produce([Output(Topics.from_settings(live_stack.kafka).clusters, event.to_bytes(), key=event.cluster_id,
                            event_id=event.event_id)])
    tracker.flush()
    return event, lists[-1].face_id


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


@pytest.fixture
def context(browser: Browser, live_stack: Settings) -> Iterator[BrowserContext]:
    made = browser.new_context(base_url=review_base(live_stack), viewport=VIEWPORT)  # type: ignore[arg-type]
    yield made
    made.close()


def _sign_in(context: BrowserContext) -> Page:
    page = context.new_page()
    page.goto("/login")
    page.get_by_label("User name").fill(REVIEWER)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/queue"))
    return page


def _listed(page: Page, cluster_id: str, timeout_s: float = 90) -> None:
    """Reload /clusters until the review service has recorded the cluster."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        page.goto("/clusters")
        if page.locator(f'[data-cluster-id="{cluster_id}"]').count():
            return
        time.sleep(1)
    raise AssertionError(f"cluster {cluster_id} not on /clusters after {timeout_s}s")


def test_a_reviewer_splits_out_a_stranger_and_confirms_a_cluster(context: BrowserContext,
                                                                 reported: tuple[ClusterEvent, str]) -> None:
    event, stranger = reported
    page = _sign_in(context)
    page.get_by_test_id("nav-clusters").click()
    _listed(page, event.cluster_id)
    row = page.locator(f'[data-cluster-id="{event.cluster_id}"]')
    expect(row.get_by_test_id("sighting-count")).to_have_text("4")
    row.get_by_test_id("open-cluster").click()
    expect(page.get_by_test_id("cluster-status")).to_have_text("pending")
    expect(page.get_by_test_id("cluster-notice")).to_contain_text("not an identification")
    crops = page.locator('[data-testid="sighting"] img')
    expect(crops).to_have_count(4)
    for i in range(4):  # every crop loaded (the store kept each probe)
        assert crops.nth(i).evaluate("img => img.complete && img.naturalWidth > 0")
    violations = axe_basics(page)
    assert not violations, f"accessibility of the cluster page:\n{describe(violations)}"

    page.locator(f'[data-face-id="{stranger}"] input[name="face"]').check()
    page.get_by_label("Reason for the split").fill("a different person: another face shape")
    page.get_by_test_id("split").click()
    expect(page.get_by_test_id("done")).to_contain_text("left the cluster")
    expect(page.locator(f'[data-face-id="{stranger}"]')).to_have_attribute("data-left", "split")
    page.get_by_label("Why these sightings show one person worth investigating").fill("same face at three stores")
    page.get_by_test_id("confirm").click()
    expect(page.get_by_test_id("cluster-status")).to_have_text("confirmed")
    page.get_by_label("Reason for searching the whole gallery now").fill("CR-2026-CL-0001")
    page.get_by_test_id("search").click()
    expect(page.get_by_test_id("search-result").first).to_have_attribute("data-trigger", "on_demand")
    SHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOT), full_page=True)
