"""The review pages on a real SQLite review store, through FastAPI's TestClient: one browser (cookie jar) per
person, signing in through the form, reading the CSRF token off the page like a browser would."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response

from rfr.core.blobstore import BlobStore, FileBlobStore
from rfr.core.db import sqlite_url
from rfr.core.settings import Settings
from rfr.review.users import Role, UserStore
from services.review.app import create_app
from services.review.context import ApiContext
from services.review.web.security import WebState
from support.review_data import ADMIN, Env, candidate_list, cheap_hasher, open_store

PASSWORD = "a long enough password"
PEOPLE = {"alice": Role.REVIEWER, "bob": Role.REVIEWER, "carol": Role.REVIEWER, "sue": Role.SUPERVISOR,
          "sam": Role.SUPERVISOR, "audrey": Role.AUDITOR, "root": Role.ADMINISTRATOR}
CSRF_RE = re.compile(r'name="csrf" value="([0-9a-f]+)"')


class FakeMonotonic:
    """A monotonic clock the test moves (the sign-in throttle's)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def csrf_of(html: str) -> str:
    found = CSRF_RE.search(html)
    assert found, "no CSRF field on the page"
    return found.group(1)


def by_testid(html: str, name: str) -> list[str]:
    """The text inside elements with ``data-testid="name"`` (simple, non-nested elements)."""
    return re.findall(rf'data-testid="{re.escape(name)}"[^>]*>([^<]*)<', html)


@dataclass
class Pages:
    app: FastAPI
    env: Env
    ctx: ApiContext
    users: UserStore
    throttle_clock: FakeMonotonic
    finals: list[int] = field(default_factory=list)

    def browser(self) -> TestClient:
        return TestClient(self.app, follow_redirects=False)

    def sign_in(self, name: str, password: str = PASSWORD) -> TestClient:
        client = self.browser()
        resp = self.submit_login(client, name, password)
        assert resp.status_code == 303, resp.text
        return client

    @staticmethod
    def submit_login(client: TestClient, name: str, password: str, next_path: str = "/queue") -> Response:
        token = csrf_of(client.get("/login").text)
        resp: Response = client.post("/login", data={"name": name, "password": password, "csrf": token,
                                                     "next": next_path})
        return resp

    def new_case(self, face_id: str, **kw: Any) -> int:
        case_id = self.env.store.record_search(candidate_list(face_id, **kw))
        assert case_id is not None
        return case_id

    @staticmethod
    def open_case(client: TestClient, case_id: int, reason: str = "crime-1") -> Response:
        resp: Response = client.get(f"/cases/{case_id}", params={"reason": reason})
        assert resp.status_code == 200, resp.text
        return resp

    def decide(self, client: TestClient, case_id: int, lead: int | None, action: str = "decide", count: int = 2,
               csrf: str | None = None, reason: str = "crime-1", extra: dict[str, str] | None = None) -> Response:
        page = self.open_case(client, case_id, reason)
        data = {"reason": reason, "note": "checked both"}
        for rank in range(1, count + 1):
            data[f"label-{rank}"] = "possible_match" if rank == lead else "not_match"
            data[f"note-{rank}"] = f"compared candidate {rank}"
        data["csrf"] = csrf if csrf is not None else csrf_of(page.text)
        data.update(extra or {})
        resp: Response = client.post(f"/cases/{case_id}/{action}", data=data)
        return resp


def users_of(env: Env, people: Mapping[str, Role], password: str) -> UserStore:
    """The user store of ``env`` (:func:`cheap_hasher`) with ``people`` (name -> role) made by :data:`ADMIN`, each
    with ``password``."""
    users = UserStore(env.store.engine, env.audit, hasher=cheap_hasher())
    for name, role in people.items():
        users.create_user(name, role, password, by=ADMIN)
    return users


def api_context(env: Env, users: UserStore, blobs: BlobStore, **fields: Any) -> ApiContext:
    """The review API's context on ``env``, its final decisions read from the store; ``fields``: the context's
    others (``settings``, ``retention``, ``metrics``...)."""
    return ApiContext(env.store, users, env.audit, blobs, env.store.decisions_since,
                      **fields)


def make_pages(tmp_path: Path, settings: Settings | None = None) -> Pages:
    env = open_store(sqlite_url(tmp_path / "review.db"))
    users = users_of(env, PEOPLE, PASSWORD)
    ctx = api_context(env, users, FileBlobStore(tmp_path / "blobs"), settings=settings,
                      photos=FileBlobStore(tmp_path / "blobs" / "gallery"))
    app = create_app(ctx)
    state = app.state.rfr_web
    assert isinstance(state, WebState)
    clock = FakeMonotonic()
    state.throttle.clock = clock
    out = Pages(app, env, ctx, users, clock)
    ctx.on_final = lambda: out.finals.append(1)
    return out


def pages_fixture(tmp_path: Path) -> Iterator[Pages]:
    """:func:`make_pages` for a fixture (``yield from``): the pages, then their store closed."""
    out = make_pages(tmp_path)
    yield out
    out.env.store.engine.dispose()
