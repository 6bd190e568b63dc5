"""The whole pipeline through the local stack: stills/s and end-to-end latency at a fixed offered load.

Starts ``rfr up`` in a temporary state dir on free ports (nothing shared with a running stack), enrols a small
gallery with ``rfr enrol``, produces synthetic 1080p CCTV stills to the submissions topic (the Kafka channel's
headers), and follows the outcomes topic until each submission is final, then ``rfr down``:

* a submission is final by :func:`rfr.core.progress.summarize` (the rule ingest's status API uses too);
* throughput: a burst of stills sent at once; stills/s = stills / (last final outcome - first send);
* latency: stills sent at a fixed rate (default half the measured throughput); per still, the time from its
  send to its final outcome as seen by this consumer; p50 / p99 / max.

Each still shows one enrolled subject (another photo of them); ``true_subject_at_rank1`` counts the stills
whose candidate list (matches topic) has that subject first: a check that the stack really searched.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from rfr.core.image_files import identity_folders
from rfr.core.imaging import ImageLimits, decode_image, encode_jpeg
from rfr.core.progress import summarize
from rfr.core.schemas import CandidateList, OutcomeEvent, OutcomeStatus, decode, submission_id
from rfr.core.settings import KafkaSettings
from rfr.core.topics import Topics
from rfr.tools import procs
from rfr.tools.degrade import place_in_scene
from rfr.tools.eval.gallery import subject_id_for
from rfr.tools.results import ACCEPTS_LISTS, ACCEPTS_OUTCOMES

logger = logging.getLogger(__name__)

RETAILER, STORE, CAMERA = "bench", "store1", "cam1"
SEARCHED = (OutcomeStatus.PASSED_FOR_REVIEW, OutcomeStatus.NO_CANDIDATE)


@dataclass(frozen=True)
class StackBenchConfig:
    faces_dir: Path
    gallery_identities: int = 40
    burst: int = 40
    paced: int = 40
    rate: float | None = None  # stills/s for the latency run; None: half the measured throughput
    face_px: float = 80.0
    scene_size: tuple[int, int] = (1920, 1080)
    level: str = "clean"  # faces the quality gate lets through, so every still runs the whole path
    seed: int = 0
    final_timeout_s: float = 300.0
    detector: str | None = None  # RFR_DETECT__DETECTOR of the stack; None: the default


def stack_env(state_dir: Path, detector: str | None = None) -> dict[str, str]:
    """Environment for a private stack: every port free, state, blobs and the stores under ``state_dir``."""
    ports = {name: procs.free_port()
             for name in ("broker", "milvus", "ingest", "detect", "embed", "match", "review", "http", "review_http")}
    return dict(
        os.environ,
        RFR_STACK__STATE_DIR=str(state_dir), RFR_BLOB_DIR=str(state_dir / "blobs"),
        RFR_STACK__BROKER_PORT=str(ports["broker"]), RFR_STACK__MILVUS_PORT=str(ports["milvus"]),
        RFR_KAFKA__BOOTSTRAP_SERVERS=f"127.0.0.1:{ports['broker']}",
        RFR_MILVUS__URI=f"http://127.0.0.1:{ports['milvus']}",
        RFR_METRICS__INGEST_PORT=str(ports["ingest"]), RFR_METRICS__DETECT_PORT=str(ports["detect"]),
        RFR_METRICS__EMBED_PORT=str(ports["embed"]), RFR_METRICS__MATCH_PORT=str(ports["match"]),
        RFR_METRICS__REVIEW_PORT=str(ports["review"]), RFR_INGEST__HTTP_PORT=str(ports["http"]),
        RFR_REVIEW__HTTP_PORT=str(ports["review_http"]),
        **({"RFR_DETECT__DETECTOR": detector} if detector else {}),
    )


def _rfr(args: Sequence[str], env: dict[str, str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "rfr", *args], env=env, capture_output=True, text=True,
                          timeout=timeout_s, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"`rfr {' '.join(args)}` failed ({done.returncode}): {done.stderr[-3000:]}")
    return done


@contextmanager
def local_stack(env: dict[str, str]) -> Iterator[None]:
    """``rfr up`` ... ``rfr down`` with ``env``."""
    try:
        _rfr(["up"], env, 300)
        yield
    finally:
        try:
            _rfr(["down"], env, 120)
        except (RuntimeError, subprocess.TimeoutExpired):
            logger.exception("rfr down failed; processes may be left (state in %s)", env["RFR_STACK__STATE_DIR"])


def pick_people(faces_dir: Path, n: int, seed: int, usable: Callable[[Path], bool] | None = None,
                ) -> list[tuple[str, Path, Path]]:
    """(identity, gallery photo, probe photo) for ``n`` identities with two or more photos, drawn with ``seed``;
    with ``usable``, only identities whose two photos it accepts (drawn in the same order until ``n`` are found)."""
    ids = {k: v for k, v in identity_folders(faces_dir).items() if len(v) >= 2}
    names = sorted(ids)
    order = np.random.default_rng(seed).permutation(len(names))
    chosen: list[int] = []
    for i in order:
        if len(chosen) == n:
            break
        if usable is None or (usable(ids[names[i]][0]) and usable(ids[names[i]][1])):
            chosen.append(int(i))
    return [(names[i], ids[names[i]][0], ids[names[i]][1]) for i in sorted(chosen)]


def gate_passes(model_dir: Path) -> Callable[[Path], bool]:
    """Whether a photo shows a face the detect stage searches (detector and quality gate of the default
    settings). The benchmark's stills must all run the whole path: a probe photo of a strongly turned head
    (LFW's Ahmad_Masood_0002, nose outside the eyes) is rejected as ``bad_pose`` by design and its stills end
    as ``no_face`` ("faces unusable: bad_pose"), which is what 2 of 60 stills did before photos were checked."""
    from rfr.core.settings import DetectSettings
    from rfr.face.faces import find_faces
    from rfr.face.runners import make_detector

    settings = DetectSettings()
    detector = make_detector(settings, model_dir)

    def usable(path: Path) -> bool:
        rgb = decode_image(path.read_bytes(), ImageLimits()).rgb
        return bool(find_faces(rgb, detector, settings).accepted)

    return usable


def gallery_folder(people: Sequence[tuple[str, Path, Path]], root: Path) -> Path:
    """A folder-per-subject gallery of symlinks to the photos (no copies)."""
    for name, photo, _ in people:
        (root / name).mkdir(parents=True, exist_ok=True)
        link = root / name / photo.name
        if not link.exists():
            link.symlink_to(photo.resolve())
    return root


def make_stills(probes: Sequence[tuple[str, Path]], count: int, cfg: StackBenchConfig,
                salt: int) -> list[tuple[str, bytes]]:
    """``count`` distinct JPEG scenes (1080p by default) of the probe photos, seeded: (identity, JPEG)."""
    rng = np.random.default_rng([cfg.seed, salt])
    out = []
    for i in range(count):
        identity, path = probes[i % len(probes)]
        photo = decode_image(path.read_bytes(), ImageLimits()).rgb
        scene, _ = place_in_scene(photo, cfg.face_px, cfg.scene_size, cfg.level, rng)
        out.append((identity, encode_jpeg(scene, 90)))
    return out


class OutcomeTracker:
    """Follows the outcomes and matches topics: when each submission is final, and its faces' top candidates."""

    def __init__(self, kafka: KafkaSettings) -> None:
        from rfr.core.kafka import make_consumer

        topics = Topics.from_settings(kafka)
        self.outcomes, self.matches = topics.outcomes, topics.matches
        self.consumer = make_consumer(kafka, f"rfr-bench-{uuid.uuid4().hex[:8]}")
        self.consumer.subscribe([self.outcomes, self.matches])
        self.by_submission: dict[str, list[OutcomeEvent]] = {}
        self.final_at: dict[str, float] = {}
        self.unreadable = 0
        self.top1: dict[str, set[str]] = {}  # submission id -> the rank-1 subject of each face with candidates

    def wait_assigned(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.consumer.assignment():
            if time.monotonic() > deadline:
                raise TimeoutError("the outcomes consumer got no partitions")
            self.poll(0.5)

    def poll(self, timeout_s: float) -> None:
        """Read what has arrived, waiting up to ``timeout_s`` for the first record only: a batch read would hold
        early records for the whole timeout and add it to their measured latency."""
        first = self.consumer.poll(timeout_s)
        if first is None:
            return
        for msg in [first, *self.consumer.consume(500, 0)]:
            if msg.error() is not None:
                continue
            try:
                if msg.topic() == self.matches:
                    found = decode(CandidateList, msg.value(), accepts=ACCEPTS_LISTS)
                    if found.candidates:
                        self.top1.setdefault(found.submission_id, set()).add(found.candidates[0].subject_id)
                else:
                    self._apply(decode(OutcomeEvent, msg.value(), accepts=ACCEPTS_OUTCOMES), time.time())
            except ValueError as exc:  # another version or not an event: counted, the benchmark goes on
                self.unreadable += 1
                logger.warning("unreadable %s record: %s", msg.topic(), exc)

    def _apply(self, ev: OutcomeEvent, now: float) -> None:
        outcomes = self.by_submission.setdefault(ev.submission_id, [])
        outcomes.append(ev)
        if ev.submission_id not in self.final_at and summarize(outcomes).final:
            self.final_at[ev.submission_id] = now

    def final_status(self, submission_id: str) -> str:
        """The final status (:func:`rfr.core.progress.summarize`), or "incomplete"."""
        progress = summarize(self.by_submission.get(submission_id, []))
        return progress.status if progress.final else "incomplete"

    def wait_final(self, ids: Sequence[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while any(i not in self.final_at for i in ids) and time.monotonic() < deadline:
            self.poll(0.05)

    def close(self) -> None:
        self.consumer.close()


class StillSender:
    def __init__(self, kafka: KafkaSettings) -> None:
        from rfr.core.kafka import make_producer
        from services.ingest.handler import submission_headers

        self.topic = Topics.from_settings(kafka).submissions
        self.producer = make_producer(kafka, **{"linger.ms": 0})
        self._headers = submission_headers

    def send(self, still: bytes) -> tuple[str, float]:
        """Produce one still; (its submission id, the wall-clock send time)."""
        captured = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        headers: list[tuple[str, str | bytes | None]] = list(self._headers(RETAILER, STORE, CAMERA, captured))
        sent = time.time()
        self.producer.produce(self.topic, still, f"{RETAILER}/{STORE}/{CAMERA}", headers=headers)
        self.producer.poll(0)
        return submission_id(RETAILER, still), sent

    def flush(self) -> None:
        if self.producer.flush(30):
            raise RuntimeError("stills not acknowledged by the broker")

    def close(self) -> None:
        """Drop the producer (its threads end) before the broker goes away."""
        self.producer.flush(5)
        del self.producer


def _latencies(tracker: OutcomeTracker, sent: dict[str, float], truth: dict[str, str]) -> dict[str, Any]:
    lat = np.array([tracker.final_at[i] - t for i, t in sent.items() if i in tracker.final_at])
    correct = sum(truth[i] in tracker.top1.get(i, set()) for i in sent)
    finals: dict[str, int] = {}
    unsearched: dict[str, int] = {}  # why a still never reached a search, by the stage's own detail
    for i in sent:
        key = tracker.final_status(i)
        finals[key] = finals.get(key, 0) + 1
        if key not in SEARCHED:
            for ev in tracker.by_submission.get(i, []):
                if ev.status not in (OutcomeStatus.RECEIVED, OutcomeStatus.FACES_FOUND):
                    detail = f"{ev.status}: {ev.detail}"
                    unsearched[detail] = unsearched.get(detail, 0) + 1
    out: dict[str, Any] = {"stills": len(sent), "completed": len(lat), "final_status": finals,
                           "not_searched": unsearched, "true_subject_at_rank1": correct}
    if len(lat):
        out |= {f"latency_{k}_s": round(float(np.quantile(lat, q)), 3) for k, q in (("p50", 0.5), ("p99", 0.99))}
        out["latency_max_s"] = round(float(lat.max()), 3)
    return out


def _truth(stills: Sequence[tuple[str, bytes]]) -> dict[str, str]:
    return {submission_id(RETAILER, still): subject_id_for(identity) for identity, still in stills}


def cpu_seconds(state_dir: Path) -> dict[str, float]:
    """CPU seconds (user + system) each process of the stack has used so far, by name."""
    import psutil

    out: dict[str, float] = {}
    for info in procs.StateFile(state_dir).load():
        try:
            times = psutil.Process(info.pid).cpu_times()
        except psutil.Error:
            continue
        out[info.name] = times.user + times.system
    return out


def burst(sender: StillSender, tracker: OutcomeTracker, stills: Sequence[tuple[str, bytes]],
          timeout_s: float, state_dir: Path | None = None) -> dict[str, Any]:
    before = cpu_seconds(state_dir) if state_dir else {}
    sent = dict(sender.send(s) for _, s in stills)
    sender.flush()
    tracker.wait_final(list(sent), timeout_s)
    out = _latencies(tracker, sent, _truth(stills))
    if state_dir:  # where the 2 cores went: what bounds the stack
        after = cpu_seconds(state_dir)
        out["cpu_ms_per_still"] = {name: round((after[name] - before.get(name, 0.0)) * 1000 / len(stills), 1)
                                   for name in sorted(after)}
    done = [tracker.final_at[i] for i in sent if i in tracker.final_at]
    if done:
        out["stills_per_s"] = round(len(done) / (max(done) - min(sent.values())), 3)
    return out


def paced(sender: StillSender, tracker: OutcomeTracker, stills: Sequence[tuple[str, bytes]], rate: float,
          timeout_s: float) -> dict[str, Any]:
    sent: dict[str, float] = {}
    start = time.monotonic()
    for k, (_, still) in enumerate(stills):
        while time.monotonic() < start + k / rate:
            tracker.poll(min(0.05, max(0.0, start + k / rate - time.monotonic())))
        sid, at = sender.send(still)
        sent[sid] = at
    sender.flush()
    tracker.wait_final(list(sent), timeout_s)
    return {"offered_rate_stills_per_s": round(rate, 3)} | _latencies(tracker, sent, _truth(stills))


def run_stack_bench(cfg: StackBenchConfig) -> dict[str, Any]:
    from rfr.core.settings import load_settings

    people = pick_people(cfg.faces_dir, cfg.gallery_identities, cfg.seed, gate_passes(load_settings().model_dir))
    probes = [(name, p) for name, _, p in people]
    stills = {name: make_stills(probes, n, cfg, salt) for name, n, salt in
              (("warmup", 2, 1), ("burst", cfg.burst, 2), ("paced", cfg.paced, 3))}
    with tempfile.TemporaryDirectory(prefix="rfr-bench-") as tmp:
        env = stack_env(Path(tmp) / "state", cfg.detector)
        kafka = KafkaSettings(bootstrap_servers=env["RFR_KAFKA__BOOTSTRAP_SERVERS"])
        started = time.perf_counter()
        with local_stack(env):
            up_s = time.perf_counter() - started
            gallery = gallery_folder(people, Path(tmp) / "gallery")
            _rfr(["enrol", str(gallery), "--no-progress", "--allow-partial"], env, 600)
            tracker, sender = OutcomeTracker(kafka), StillSender(kafka)
            try:
                tracker.wait_assigned()
                warm = burst(sender, tracker, stills["warmup"], cfg.final_timeout_s)
                thr = burst(sender, tracker, stills["burst"], cfg.final_timeout_s, Path(env["RFR_STACK__STATE_DIR"]))
                rate = cfg.rate or max(0.05, 0.5 * float(thr.get("stills_per_s") or 0.1))
                lat = paced(sender, tracker, stills["paced"], rate, cfg.final_timeout_s)
            finally:
                tracker.close()
                sender.close()
    return {"detector": cfg.detector or "default", "stack_up_s": round(up_s, 1),
            "gallery_subjects": len(people), "warmup": warm, "throughput": thr,
            "latency": lat, "stills": {"scene": list(cfg.scene_size), "face_px": cfg.face_px, "level": cfg.level,
                                       "format": "JPEG q90"}}
