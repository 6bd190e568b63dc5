"""The review pages' security through FastAPI's TestClient on a real SQLite store: the session cookie's flags, CSRF
refusals, the sign-in throttle, the security headers on pages and images, sign-in redirects, roles, and keys
that never work on a page (a retailer's, a case system's)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from support.review_data import ADMIN
from support.review_pages import PASSWORD, Pages, by_testid, csrf_of, make_pages, pages_fixture

from rfr.core.settings import ReviewSettings, Settings
from rfr.review.users import Role
from services.review.service import start_http
from services.review.web.security import CSP, safe_next
from services.review.web.throttle import ADDRESS_FACTOR, LoginThrottle

RETAILER_KEY = "rfr_retailer-key-0123456789abcdef0123456789"


@pytest.fixture
def pages(tmp_path: Path) -> Iterator[Pages]:
    yield from pages_fixture(tmp_path)


def test_the_session_cookie_is_httponly_strict_and_lasts_a_session(pages: Pages) -> None:
    client = pages.browser()
    resp = pages.submit_login(client, "alice", PASSWORD, "/cases/1?reason=x")
    assert resp.status_code == 303 and resp.headers["location"] == "/cases/1?reason=x"
    cookie = resp.headers["set-cookie"]
    assert cookie.startswith("rfr_session=rfs1.")
    for flag in ("HttpOnly", "SameSite=strict", "Path=/", "Max-Age=28800"):
        assert flag in cookie
    assert "Secure" not in cookie
    assert client.get("/queue").status_code == 200


def test_cookie_secure_marks_the_cookie_secure(tmp_path: Path) -> None:
    pages = make_pages(tmp_path, Settings(review=ReviewSettings(cookie_secure=True)))
    assert "Secure" in pages.browser().get("/login").headers["set-cookie"]  # the pre-session CSRF cookie too
    client = TestClient(pages.app, base_url="https://testserver", follow_redirects=False)
    resp = pages.submit_login(client, "alice", PASSWORD)
    assert resp.status_code == 303 and "Secure" in resp.headers["set-cookie"]
    assert client.get("/queue").status_code == 200


def test_next_is_only_ever_a_path_on_this_site(pages: Pages) -> None:
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil", "javascript:alert(1)", ""):
        resp = pages.submit_login(pages.browser(), "alice", PASSWORD, target)
        assert resp.headers["location"] == "/queue", target
    assert safe_next("/audit?actor=a") == "/audit?actor=a"


def test_sign_out_drops_the_cookie(pages: Pages) -> None:
    client = pages.sign_in("alice")
    page = client.get("/queue")
    resp = client.post("/logout", data={"csrf": csrf_of(page.text)})
    assert resp.status_code == 303 and resp.headers["location"] == "/login"
    assert 'rfr_session=""' in resp.headers["set-cookie"] or "Max-Age=0" in resp.headers["set-cookie"]
    assert client.get("/queue").status_code == 303


def test_sign_out_ends_the_session_not_only_the_cookie(pages: Pages) -> None:
    """Regression (finding 11): a copy of the cookie taken before sign-out no longer works after it."""
    alice, elsewhere = pages.sign_in("alice"), pages.sign_in("alice")
    token = alice.cookies.get("rfr_session")
    assert token
    assert alice.post("/logout", data={"csrf": csrf_of(alice.get("/queue").text)}).status_code == 303
    thief = pages.browser()
    thief.cookies.set("rfr_session", token)
    assert thief.get("/queue").status_code == 303
    assert pages.browser().get("/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert elsewhere.get("/queue").status_code == 200  # alice's other session goes on


def test_the_pre_sign_in_csrf_token_is_refused_after_sign_in(pages: Pages) -> None:
    """Regression (finding 15): the pre-session token is for the sign-in form only."""
    case_id = pages.new_case("sub_a:f0")
    browser = pages.browser()
    pre_token = csrf_of(browser.get("/login").text)
    resp = browser.post("/login", data={"name": "alice", "password": PASSWORD, "csrf": pre_token, "next": "/queue"})
    assert resp.status_code == 303
    assert "rfr_csrf=" in resp.headers["set-cookie"] and "Max-Age=0" in resp.headers["set-cookie"]  # dropped
    browser.cookies.set("rfr_csrf", "planted")  # even with a pre-session cookie (re)planted
    pages.open_case(browser, case_id)
    assert browser.post(f"/cases/{case_id}/release", data={"csrf": pre_token}).status_code == 403
    assert pages.decide(browser, case_id, 1, csrf=pre_token).status_code == 403
    assert pages.decide(browser, case_id, 1).status_code == 303  # the session's token works


def test_cookie_secure_names_the_pre_sign_in_cookie_host_only(tmp_path: Path) -> None:
    pages = make_pages(tmp_path, Settings(review=ReviewSettings(cookie_secure=True)))
    client = TestClient(pages.app, base_url="https://testserver", follow_redirects=False)
    cookie = client.get("/login").headers["set-cookie"]
    assert cookie.startswith("__Host-rfr_csrf=") and "Secure" in cookie and "Path=/" in cookie
    assert "Domain" not in cookie
    token = csrf_of(client.get("/login").text)
    planted = TestClient(pages.app, base_url="https://testserver", follow_redirects=False)
    planted.cookies.set("rfr_csrf", client.cookies["__Host-rfr_csrf"])  # without the prefix: not the one read
    assert planted.post("/login", data={"name": "alice", "password": PASSWORD, "csrf": token}).status_code == 403
    assert client.post("/login", data={"name": "alice", "password": PASSWORD, "csrf": token}).status_code == 303
    pages.env.store.engine.dispose()


def test_the_sign_in_page_and_the_api_share_one_throttle(pages: Pages) -> None:
    """Regression (finding 4): POST /v1/login is no way around the page's throttle, nor the page around it."""
    api = pages.browser()
    for _ in range(5):
        assert api.post("/v1/login", json={"name": "alice", "password": "wrong password!"}).status_code == 401
    assert pages.submit_login(pages.browser(), "alice", PASSWORD).status_code == 429
    resp = api.post("/v1/login", json={"name": "alice", "password": PASSWORD})
    assert resp.status_code == 429 and resp.headers["retry-after"] == "1"
    assert resp.json()["detail"]["reason"] == "throttled"
    pages.throttle_clock.now += 1.0
    assert api.post("/v1/login", json={"name": "alice", "password": PASSWORD}).status_code == 200


def test_the_review_api_believes_forwarded_addresses_only_from_trusted_proxies(tmp_path: Path) -> None:
    """Regression (finding 8): served as `python -m services.review` serves it, X-Forwarded-For from 127.0.0.1 is
    ignored unless review.trusted_proxies names it, so a spray of names cannot rotate the address key."""
    for trusted, spray_throttled in (([], True), (["127.0.0.1"], False)):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        settings = Settings(review=ReviewSettings(http_port=port, trusted_proxies=trusted))
        pages = make_pages(tmp_path / str(bool(trusted)), settings)
        server = start_http(settings, pages.ctx)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
                codes = [client.post("/v1/login", json={"name": f"spray{i}", "password": "wrong password!"},
                                     headers={"X-Forwarded-For": f"198.51.100.{i}"}).status_code
                         for i in range(5 * ADDRESS_FACTOR + 1)]
        finally:
            server.close()
            pages.env.store.engine.dispose()
        assert (codes[-1] == 429) is spray_throttled, (trusted, codes[-3:])
        assert set(codes[:-1]) == {401}


def test_trusted_proxies_are_addresses_or_networks() -> None:
    assert ReviewSettings(trusted_proxies=["10.0.0.5", "10.1.0.0/16", "::1"]).trusted_proxies[1] == "10.1.0.0/16"
    for bad in (["*"], ["proxy.example"], ["10.0.0.1/8"]):
        with pytest.raises(ValueError, match="trusted_proxies"):
            ReviewSettings(trusted_proxies=bad)


def test_forms_without_a_valid_csrf_token_are_refused(pages: Pages) -> None:
    case_id = pages.new_case("sub_a:f0")
    alice, bob = pages.sign_in("alice"), pages.sign_in("bob")
    for data in ({}, {"csrf": ""}, {"csrf": "0" * 64}):
        resp = pages.browser().post("/login", data={"name": "alice", "password": PASSWORD, **data})
        assert resp.status_code == 403 and "CSRF" in resp.text
        resp = alice.post("/logout", data=data)
        assert resp.status_code == 403
    bobs_token = csrf_of(bob.get("/queue").text)
    without = alice.post(f"/cases/{case_id}/decide", data={"reason": "crime-1", "label-1": "not_match",
                                                           "note-1": "nope", "label-2": "not_match", "note-2": "no"})
    assert without.status_code == 403
    for token in ("", "zz", bobs_token):  # another session's token is not this one's
        resp = pages.decide(alice, case_id, 1, csrf=token)
        assert resp.status_code == 403, resp.text
        assert by_testid(resp.text, "error-title") == ["Form expired or forged (CSRF)"]
    assert "decision" not in pages.env.actions()
    assert pages.decide(alice, case_id, 1).status_code == 303


def test_the_login_form_needs_its_own_csrf_cookie(pages: Pages) -> None:
    token = csrf_of(pages.browser().get("/login").text)
    stranger = pages.browser()  # a forged form from another site: the token, but not the victim's cookie
    resp = stranger.post("/login", data={"name": "alice", "password": PASSWORD, "csrf": token})
    assert resp.status_code == 403


def test_repeated_failed_sign_ins_are_slowed_down(pages: Pages) -> None:
    client = pages.browser()
    for _ in range(5):
        assert pages.submit_login(client, "alice", "wrong password!").status_code == 401
    resp = pages.submit_login(client, "alice", PASSWORD)  # even the right password waits
    assert resp.status_code == 429 and resp.headers["retry-after"] == "1"
    assert by_testid(resp.text, "login-error") == ["Too many failed sign-ins: wait 1 s, then try again."]
    pages.throttle_clock.now += 1.0
    assert pages.submit_login(client, "alice", "wrong password!").status_code == 401
    resp = pages.submit_login(client, "alice", PASSWORD)
    assert resp.status_code == 429 and resp.headers["retry-after"] == "2"
    pages.throttle_clock.now += 2.0
    assert pages.submit_login(client, "alice", PASSWORD).status_code == 303  # success resets
    assert pages.submit_login(pages.browser(), "alice", "wrong password!").status_code == 401


def test_one_address_trying_many_names_is_slowed_down_too(pages: Pages) -> None:
    client = pages.browser()
    for i in range(5 * ADDRESS_FACTOR):  # ten times the per-name limit
        assert pages.submit_login(client, f"a{i}", "wrong password!").status_code == 401
    assert pages.submit_login(client, "bob", PASSWORD).status_code == 429


def test_junk_names_from_a_shared_address_do_not_lock_out_another_user(pages: Pages) -> None:
    """Regression (finding 8): behind a proxy every client has its address; a few junk names must not lock out
    alice, while the per-name lock still holds for a name tried too often."""
    attacker, alice = pages.browser(), pages.browser()  # TestClient: one address for both
    for i in range(6):
        assert pages.submit_login(attacker, f"nobody{i}", "x").status_code == 401
    assert pages.submit_login(alice, "alice", PASSWORD).status_code == 303
    for _ in range(5):
        assert pages.submit_login(attacker, "bob", "wrong password!").status_code == 401
    assert pages.submit_login(pages.browser(), "bob", PASSWORD).status_code == 429  # bob's name is locked
    assert pages.submit_login(pages.browser(), "carol", PASSWORD).status_code == 303


def test_throttle_delay_doubles_up_to_the_limit() -> None:
    now = [0.0]
    throttle = LoginThrottle(2, 5.0, clock=lambda: now[0])
    waits = []
    for _ in range(6):
        throttle.failed("x", "1.2.3.4")
        waits.append(throttle.wait_s("x", "9.9.9.9"))
    assert waits == [0, 1, 2, 4, 5, 5]
    now[0] += 5.0
    assert throttle.wait_s("x", "9.9.9.9") == 0
    throttle.succeeded("x", "1.2.3.4")
    throttle.failed("x", "1.2.3.4")
    assert throttle.wait_s("x", "1.2.3.4") == 0


def _assert_secure_headers(headers: dict[str, str] | object, what: str) -> None:
    h = headers
    assert h["content-security-policy"] == CSP, what  # type: ignore[index]
    assert h["cache-control"] == "no-store", what  # type: ignore[index]
    assert h["x-content-type-options"] == "nosniff", what  # type: ignore[index]
    assert h["referrer-policy"] == "no-referrer", what  # type: ignore[index]


def test_pages_and_images_carry_the_security_headers(pages: Pages) -> None:
    case_id = pages.new_case("sub_a:f0")
    anonymous = pages.browser()
    _assert_secure_headers(anonymous.get("/login").headers, "/login")
    _assert_secure_headers(anonymous.get("/queue").headers, "redirect")
    alice = pages.sign_in("alice")
    for path in ("/queue", f"/cases/{case_id}", f"/cases/{case_id}?reason=crime-1", f"/cases/{case_id}/probe.jpg",
                 "/no-such-page"):
        resp = alice.get(path)
        _assert_secure_headers(resp.headers, path)
    probe = alice.get(f"/cases/{case_id}/probe.jpg")
    assert probe.status_code == 200 and probe.headers["content-type"] == "image/jpeg"
    token = pages.users.issue_session(pages.users.authenticate("alice", PASSWORD) or ADMIN)
    api = anonymous.get(f"/v1/cases/{case_id}/probe.jpg", headers={"Authorization": f"Bearer {token}"})
    _assert_secure_headers(api.headers, "API image")
    assert "content-security-policy" not in anonymous.get("/docs").headers  # Swagger UI needs its CDN script
    css = anonymous.get("/static/rfr.css")
    assert css.status_code == 200 and css.headers["x-content-type-options"] == "nosniff"


def test_no_inline_script_or_style_on_the_pages(pages: Pages) -> None:
    case_id = pages.new_case("sub_a:f0")
    alice = pages.sign_in("alice")
    for path in ("/login", "/queue", f"/cases/{case_id}?reason=crime-1", f"/cases/{case_id}"):
        html = alice.get(path).text
        assert "style=" not in html and "<style" not in html, path
        assert "<script>" not in html and "onclick" not in html and "javascript:" not in html, path


def test_pages_send_the_signed_out_to_sign_in(pages: Pages) -> None:
    client = pages.browser()
    resp = client.get("/cases/7?reason=r 1")
    assert resp.status_code == 303 and resp.headers["location"] == "/login?next=%2Fcases%2F7%3Freason%3Dr%25201"
    client.cookies.set("rfr_session", "rfs1.forged.token")
    assert client.get("/queue").headers["location"] == "/login?next=%2Fqueue"
    assert client.get("/").headers["location"] == "/queue"
    login = client.get("/login?next=/supervisor")
    assert 'name="next" value="/supervisor"' in login.text


def test_keys_and_api_tokens_never_open_a_page(pages: Pages) -> None:
    pages.new_case("sub_a:f0")
    cms = pages.users.create_token("cms", Role.CASE_SYSTEM, by=ADMIN)
    for key in (RETAILER_KEY, cms):
        client = pages.browser()
        client.cookies.set("rfr_session", key)
        assert client.get("/queue").status_code == 303
        assert client.get("/cases/1/probe.jpg").status_code == 303
        bearer = pages.browser().get("/queue", headers={"Authorization": f"Bearer {key}", "X-API-Key": key})
        assert bearer.status_code == 303


def test_a_role_without_the_page_gets_a_403_page(pages: Pages) -> None:
    pages.new_case("sub_a:f0")
    root, alice = pages.sign_in("root"), pages.sign_in("alice")
    assert root.get("/queue").status_code == 200
    for path in ("/cases/1?reason=x", "/cases/1/probe.jpg"):
        resp = root.get(path)
        assert resp.status_code == 403 and "administrator may not" in resp.text
    assert alice.get("/supervisor").status_code == 403
    assert 'href="/supervisor"' not in alice.get("/queue").text
    assert 'href="/supervisor"' in pages.sign_in("sue").get("/queue").text


def test_a_deactivated_user_is_signed_out(pages: Pages) -> None:
    alice = pages.sign_in("alice")
    pages.users.deactivate("alice", by=ADMIN)
    assert alice.get("/queue").status_code == 303
    assert pages.submit_login(pages.browser(), "alice", PASSWORD).status_code == 401
