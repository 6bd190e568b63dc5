"""`python -m services.review` on a real broker and a SQLite store: a candidate list becomes a case, two reviewers
make it a lead that reaches rfr.decisions.v1, an enrolment re-searches an unsolved probe into a new case, and
SIGTERM stops it cleanly with the audit log intact."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.broker import Record, on, read_until
from support.review_data import ADMIN, candidate_list, cheap_hasher, enrolment, unit

from rfr.core.db import make_engine, sqlite_url
from rfr.core.kafka import EVENT_ID_HEADER, make_producer
from rfr.core.review_messages import DecisionEvent, GalleryChange
from rfr.core.schemas import CandidateList, decode
from rfr.core.settings import KafkaSettings
from rfr.core.topics import Topics
from rfr.review.audit import AuditLog
from rfr.review.users import Role, UserStore
from rfr.tools import procs

PASSWORD = "integration password"


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Service:
    env: dict[str, str]
    base: str
    metrics: str
    state: Path
    log: Path
    topics: Topics
    kafka: KafkaSettings
    tokens: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None

    def h(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def start(self) -> None:
        """Start the service (again) and wait for its API."""
        port = int(self.base.rsplit(":", 1)[1])
        with self.log.open("ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "services.review"], env=self.env, stdout=log,
                                    stderr=subprocess.STDOUT)
        self.proc = proc
        wait_for(lambda: procs.port_open("127.0.0.1", port) or proc.poll() is not None, 60, "the review API")
        assert proc.poll() is None, self.log.read_text()[-3000:]

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def send(self, topic: str, messages: Sequence[CandidateList | GalleryChange], key: str | None = None) -> None:
        producer = make_producer(self.kafka)
        for m in messages:
            k = key or (m.submission_id if isinstance(m, CandidateList) else m.watch_list)
            producer.produce(topic, m.to_bytes(), k.encode(), headers=[(EVENT_ID_HEADER, m.event_id.encode())])
        assert producer.flush(30) == 0

    def queue(self, state: str = "pending") -> list[dict[str, Any]]:
        resp = httpx.get(f"{self.base}/v1/queue", headers=self.h("sue"), params={"state": state, "limit": 500})
        assert resp.status_code == 200, resp.text
        return resp.json()  # type: ignore[no-any-return]

    def audit(self) -> AuditLog:
        engine = make_engine(sqlite_url(self.state / "review.db"))
        return AuditLog(engine, (self.state / "review-secret").read_bytes())


def add_people(state: Path) -> dict[str, str]:
    """Users made as `rfr review users create` would, on the service's own database and secret."""
    engine = make_engine(sqlite_url(state / "review.db"))
    audit = AuditLog(engine, (state / "review-secret").read_bytes())
    users = UserStore(engine, audit, hasher=cheap_hasher())
    tokens = {}
    for name, role in (("alice", Role.REVIEWER), ("bob", Role.REVIEWER), ("sue", Role.SUPERVISOR)):
        users.create_user(name, role, PASSWORD, by=ADMIN)
        tokens[name] = users.issue_session(users.authenticate(name, PASSWORD) or ADMIN)
    engine.dispose()
    return tokens


def service_env(kafka: KafkaSettings, tmp_path: Path, **extra: str) -> dict[str, str]:
    return dict(os.environ, RFR_KAFKA__BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
                RFR_KAFKA__TOPIC_NAMESPACE=kafka.topic_namespace, RFR_KAFKA__GROUP_NAMESPACE=kafka.group_namespace,
                RFR_STACK__STATE_DIR=str(tmp_path / "state"), RFR_BLOB_DIR=str(tmp_path / "blobs"),
                RFR_REVIEW__PUBLISH_INTERVAL_S="0.5", **extra)


@pytest.fixture
def service(kafka_settings: KafkaSettings, tmp_path: Path) -> Iterator[Service]:
    http_port, metrics_port = procs.free_port(), procs.free_port()
    env = service_env(kafka_settings, tmp_path, RFR_REVIEW__HTTP_PORT=str(http_port),
                      RFR_METRICS__REVIEW_PORT=str(metrics_port))
    svc = Service(env, f"http://127.0.0.1:{http_port}", f"http://127.0.0.1:{metrics_port}/metrics",
                  tmp_path / "state", tmp_path / "review.log", Topics.from_settings(kafka_settings), kafka_settings, {})
    try:
        svc.start()
        svc.tokens = add_people(svc.state)
        yield svc
    finally:
        if svc.proc is not None and svc.proc.poll() is None:
            svc.proc.kill()


def decide(svc: Service, who: str, case_id: int, lead: int | None) -> dict[str, Any]:
    labels = [{"rank": r, "label": "possible_match" if r == lead else "not_match", "note": f"compared {r}"}
              for r in (1, 2)]
    resp = httpx.post(f"{svc.base}/v1/cases/{case_id}/decisions", headers=svc.h(who),
                      json={"labels": labels, "reason": "crime-1"})
    assert resp.status_code == 200, resp.text
    return resp.json()  # type: ignore[no-any-return]


def test_a_candidate_list_becomes_a_case_and_its_lead_is_published(service: Service) -> None:
    svc, topics = service, service.topics
    cl = candidate_list("sub_a:f0")
    svc.send(topics.matches, [cl, cl])  # the second a redelivery: still one case
    wait_for(lambda: len(svc.queue()) >= 1, 60, "the case")
    [case] = svc.queue()
    assert decide(svc, "alice", case["case_id"], lead=1)["state"] == "awaiting_verification"
    assert decide(svc, "bob", case["case_id"], lead=1)["state"] == "lead"
    records = read_until(svc.kafka, [topics.decisions], lambda rs: len(rs) >= 1, timeout_s=60)
    [record] = on(topics.decisions, records)
    event = decode(DecisionEvent, record.value)
    assert (event.outcome, event.case_id, event.case_ref, event.two_person) == ("lead", case["case_id"], "crime-1",
                                                                               True)
    assert event.lead is not None and event.lead.subject_id == "subj-1"
    assert record.key == f"case-{case['case_id']}".encode()
    assert record.headers[EVENT_ID_HEADER] == f"case-{case['case_id']}:final"
    page = urllib.request.urlopen(svc.metrics, timeout=5).read().decode()
    assert 'rfr_review_cases_created_total{trigger="submission"} 1.0' in page
    assert 'rfr_review_decisions_total{outcome="lead"} 1.0' in page
    assert 'rfr_review_steps_total{stage="first"} 1.0' in page
    assert 'rfr_review_steps_total{stage="verification"} 1.0' in page
    assert svc.stop() == 0, svc.log.read_text()[-3000:]
    report = svc.audit().verify()
    assert report.ok and report.checkpoints >= 1, report.problems
    actions = [e["action"] for e in svc.audit().export(None, None)]
    for action in ("policy_change", "search", "case_created", "decision", "verification", "decision_published"):
        assert action in actions, action


def test_an_enrolment_re_searches_an_unsolved_probe_into_a_new_case(service: Service) -> None:
    svc, topics = service, service.topics
    unsolved = candidate_list("sub_b:f0", candidates=(), template=unit((5, 1.0)))
    svc.send(topics.matches, [unsolved])

    def searched() -> bool:
        return any(e["action"] == "search" for e in svc.audit().export(None, None))

    wait_for(searched, 60, "the no-candidate search to be recorded")
    assert svc.queue() == []
    change = enrolment("gc-1", [("gf-new", "subj-new", unit((5, 1.0))), ("gf-other", "subj-other", unit((7, 1.0)))])
    svc.send(topics.gallery, [change])
    def re_searches(records: list[Record]) -> list[CandidateList]:
        lists = [decode(CandidateList, r.value) for r in on(topics.matches, records)]
        return [cl for cl in lists if cl.trigger == "re_search"]

    [again] = re_searches(read_until(svc.kafka, [topics.matches], lambda rs: bool(re_searches(rs)), timeout_s=60))
    assert (again.event_id, again.re_search_of) == ("sub_b:f0:rs:gc-1", "gc-1")
    assert [c.subject_id for c in again.candidates] == ["subj-new"]
    wait_for(lambda: len(svc.queue()) == 1, 60, "the re-search case")
    [case] = svc.queue()
    assert case["trigger"] == "re_search" and case["face_id"] == "sub_b:f0"
    assert svc.stop() == 0, svc.log.read_text()[-3000:]
    assert svc.audit().verify().ok


def test_killed_mid_stream_no_case_is_lost_or_duplicated(service: Service) -> None:
    svc = service
    lists = [candidate_list(f"sub_{i:03d}:f0") for i in range(60)]
    svc.send(svc.topics.matches, lists)
    wait_for(lambda: len(svc.queue()) >= 1, 60, "the first cases")
    assert svc.proc is not None
    svc.proc.kill()  # SIGKILL: no clean shutdown
    svc.proc.wait(10)
    svc.start()
    wait_for(lambda: len(svc.queue()) >= len(lists), 90, "every case after the restart")
    time.sleep(2)  # anything redelivered has been handled by now
    cases = svc.queue()
    assert sorted(c["face_id"] for c in cases) == sorted(cl.face_id for cl in lists)
    assert svc.stop() == 0, svc.log.read_text()[-3000:]
    assert svc.audit().verify().ok


def test_an_unusable_store_or_port_stops_it_with_its_exit_code(kafka_settings: KafkaSettings,
                                                              tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "services.review"]
    bad_url = service_env(kafka_settings, tmp_path, RFR_REVIEW__DATABASE_URL="mysql://nobody@nowhere/db",
                          RFR_METRICS__REVIEW_PORT="0")
    done = subprocess.run(argv, env=bad_url, capture_output=True, timeout=60, check=False)
    assert done.returncode == 4, done.stderr.decode()[-2000:]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = service_env(kafka_settings, tmp_path, RFR_REVIEW__HTTP_PORT=str(taken.getsockname()[1]),
                           RFR_METRICS__REVIEW_PORT="0")
        done = subprocess.run(argv, env=busy, capture_output=True, timeout=60, check=False)
    assert done.returncode == 3, done.stderr.decode()[-2000:]
