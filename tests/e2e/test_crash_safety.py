"""Crash safety: SIGKILL each service mid-stream, restart it, and check that every still still ends in exactly one
final outcome per face, as seen by a consumer that de-duplicates on event_id. Also: SIGTERM exits cleanly."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from support.stack import rfr_cli

from rfr.core.schemas import submission_id
from rfr.core.settings import Settings, review_database_url
from rfr.tools import procs, stack
from rfr.tools.demo import Probe, cctv_still, submit
from rfr.tools.results import ResultCollector

STILLS_PER_ROUND = 12


def _people(lfw_dir: Path, n: int) -> list[list[Path]]:
    people = sorted(p for p in lfw_dir.iterdir() if p.is_dir() and len(list(p.glob("*.jpg"))) >= 2)
    return [sorted(p.glob("*.jpg")) for p in people[:n]]


@pytest.fixture(scope="module")
def enrolled(live_stack: Settings, lfw_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[list[Path]]:
    people = _people(lfw_dir, STILLS_PER_ROUND)
    gallery = tmp_path_factory.mktemp("gallery")
    for photos in people:
        (gallery / photos[0].parent.name).mkdir()
        (gallery / photos[0].parent.name / photos[0].name).symlink_to(photos[0])
    done = rfr_cli(live_stack, "enrol", str(gallery), "--no-progress", "--allow-partial")
    assert done.returncode == 0, done.stderr
    return people


def _info(settings: Settings, name: str) -> procs.ProcInfo:
    infos = procs.StateFile(stack.plan(settings).state_dir).load()
    return next(i for i in infos if i.name == name)


def _probes(people: list[list[Path]], seed: int) -> list[Probe]:
    rng = np.random.default_rng(seed)
    out = []
    for photos in people:
        jpeg = cctv_still(photos[1], 64, "mild", rng)
        out.append(Probe(photos[0].parent.name, True, jpeg, submission_id("demo-retailer", jpeg)))
    return out


def _review_records(settings: Settings, lists: dict[str, bool], timeout_s: float = 120) -> dict[str, int]:
    """Per candidate list event id (True: it has candidates): searches recorded + cases made by the review service,
    read from its store once it has caught up (or after ``timeout_s``)."""
    path = review_database_url(settings).removeprefix("sqlite:///")
    deadline = time.monotonic() + timeout_s
    while True:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            searches = {r[0] for r in db.execute("SELECT event_id FROM searches")}
            cases = [r[0] for r in db.execute("SELECT search_event_id FROM cases")]
        found = {e: (e in searches) + cases.count(e) for e in lists}
        if all(n == 1 + has for e, has in lists.items() for n in [found[e]]) or time.monotonic() > deadline:
            return found


@pytest.mark.parametrize("victim", ["ingest", "detect", "embed", "match", "review"])
def test_sigkill_mid_stream_loses_nothing(live_stack: Settings, enrolled: list[list[Path]], victim: str) -> None:
    probes = _probes(enrolled, seed=100 + stack.SERVICES.index(victim))
    collector = ResultCollector(live_stack.kafka, f"crash-{victim}-{time.time_ns()}")
    half = len(probes) // 2
    submit(live_stack, probes[:half])
    time.sleep(1.0)  # the stream is going: the kill lands with work in flight
    info = _info(live_stack, victim)
    os.kill(info.pid, signal.SIGKILL)
    os.waitpid(info.pid, 0)
    submit(live_stack, probes[half:])  # arrives while the victim is dead
    stack.restart_service(live_stack, victim)
    complete = collector.wait_for([p.submission_id for p in probes], 300)
    collector.close()
    results = collector.results
    missing = [p.truth for p in probes if not (p.submission_id in results and results[p.submission_id].final)]
    assert complete and not missing, f"after killing {victim}, no final outcome for {missing}"
    for p in probes:
        res = results[p.submission_id]
        # Exactly one final outcome per face: a still with faces has one list per face id and no other ending.
        faces = res.progress.faces
        if faces:
            assert len(res.lists) + len(res.failed_faces) == faces
            assert not res.failed_faces & set(res.lists)
        else:
            assert not res.lists
    # The review service keeps each list once: one search record, and one case when it has candidates.
    lists = {cl.event_id: bool(cl.candidates) for p in probes for cl in results[p.submission_id].lists.values()}
    found = _review_records(live_stack, lists)
    wrong = {e: n for e, n in found.items() if n != 1 + lists[e]}
    assert not wrong, f"after killing {victim}, review records (search + case) per list differ: {wrong}"
    print(f"{victim}: {len(probes)} stills final, {sum(lists.values())} cases; duplicates dropped by the consumer: "
          f"{collector.duplicates}")


def test_sigterm_finishes_and_exits_zero(live_stack: Settings) -> None:
    for name in stack.SERVICES:
        info = _info(live_stack, name)
        os.kill(info.pid, signal.SIGTERM)
        _, status = os.waitpid(info.pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"{name} exit status {status}"
        stack.restart_service(live_stack, name)
