"""Debian's chromium driven by Playwright (sync API), and axe-core accessibility checks in the same browser.

Playwright's own browser download is not used (no network in CI): the browser is ``$RFR_CHROMIUM`` or
``/usr/bin/chromium``, which ``.ci/install-tools.sh`` (``make tools``, part of ``make test``) installs from Debian.
A missing browser fails the test with that instruction rather than skipping it: the browser tests are part of the
acceptance of the review pages.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

DEFAULT_CHROMIUM = "/usr/bin/chromium"
AXE_TAGS = ("wcag2a", "wcag2aa")
"""The WCAG 2 A and AA rules of axe-core: the ones this project holds its pages to."""
BASIC_CATEGORIES = ("cat.forms", "cat.color", "cat.keyboard")
"""axe-core rule categories of "the basics": labels of form controls, contrast, keyboard reach (focusable,
tab order, scrollable regions, skip links)."""
BASIC_RULES = ("label", "label-title-only", "form-field-multiple-labels", "select-name", "button-name",
               "input-button-name", "link-name", "image-alt", "color-contrast", "frame-focusable-content",
               "nested-interactive", "scrollable-region-focusable")
"""Rules of the basics outside those categories: every control, link and image named."""


def chromium_path() -> str:
    """The chromium binary to drive: ``$RFR_CHROMIUM`` or ``/usr/bin/chromium``; fails the test when absent."""
    path = os.environ.get("RFR_CHROMIUM") or DEFAULT_CHROMIUM
    if not (Path(path).is_file() and os.access(path, os.X_OK)) and shutil.which(path) is None:
        pytest.fail(f"no chromium at {path}: run `make tools` (bash .ci/install-tools.sh installs Debian's "
                    "`chromium` package) or set RFR_CHROMIUM to a chromium binary", pytrace=False)
    return path


@contextmanager
def chromium(headless: bool = True) -> Iterator[Browser]:
    """A running chromium (closed afterwards). ``--no-sandbox``: the tests may run as root in a container, where
    chromium's own sandbox cannot start."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), headless=headless,
                                     args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield browser
        finally:
            browser.close()


def axe_basics(page: Page, rules: Iterable[str] = BASIC_RULES,
               categories: Iterable[str] = BASIC_CATEGORIES) -> list[dict[str, Any]]:
    """axe-core's violations of WCAG 2 A/AA rules on the current page that are ``rules`` or in ``categories``."""
    from axe_playwright_python.sync_playwright import Axe  # type: ignore[import-untyped]

    options = {"runOnly": {"type": "tag", "values": list(AXE_TAGS)}, "resultTypes": ["violations"]}
    response = Axe().run(page, options=options).response
    kinds = ("passes", "violations", "incomplete", "inapplicable")
    ran = {r.get("id") for kind in kinds for r in response.get(kind, [])}
    assert {"label", "color-contrast"} <= ran, f"axe-core did not run the basic rules (ran: {sorted(map(str, ran))})"
    ids, cats = set(rules), set(categories)
    return [v for v in response.get("violations", []) if v.get("id") in ids or cats & set(v.get("tags", []))]


def describe(violations: list[dict[str, Any]]) -> str:
    """The violations, one line per offending element: rule, impact, help and the element's selector and HTML."""
    lines = []
    for v in violations:
        for node in v.get("nodes", []):
            target = " ".join(map(str, node.get("target", [])))
            lines.append(f"{v.get('id')} ({v.get('impact')}): {v.get('help')} at {target}: "
                         f"{str(node.get('html', ''))[:160]}")
    return "\n".join(lines) or "none"
