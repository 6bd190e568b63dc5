"""`rfr demo`: the whole pipeline end to end on the embedded default.

Starts the local stack, enrols a gallery of labelled photos (one per identity), submits CCTV-like stills of other
photos of those people and of people who are not enrolled over Kafka, prints every candidate list, stops the stack.

``--keep`` leaves that stack running instead, with demo accounts of the review service (two reviewers, a supervisor
and an auditor, random passwords printed once) so a newcomer can work the cases the demo made in the review pages;
the stack is recorded in the state dir of the user's own stack (``<stack.state_dir>/stack.json``), so `rfr status`
shows it and `rfr down` stops it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import cv2
import numpy as np
import typer

from rfr.core.image_files import identity_folders
from rfr.core.imaging import encode_jpeg
from rfr.core.settings import Settings
from rfr.tools.results import SubmissionResult

app = typer.Typer(add_completion=False)

RETAILER, STORE, CAMERA = "demo-retailer", "store-001", "cam-01"
DEMO_ACCOUNTS = (("demo-reviewer-1", "reviewer"), ("demo-reviewer-2", "reviewer"),
                 ("demo-supervisor", "supervisor"), ("demo-auditor", "auditor"))
"""The review users ``--keep`` creates (name, role): two reviewers for the two-person rule, a supervisor for
disagreements, an auditor for the audit pages."""


@dataclass(frozen=True)
class Probe:
    truth: str
    enrolled: bool
    jpeg: bytes
    submission_id: str


class NoFacesError(RuntimeError):
    """The demo has no labelled faces: none locally and none downloaded; the message says what was tried."""


NO_FACES = ("no labelled faces found: put LFW-style data (a folder per identity) at ../shared/faces/lfw, "
            "or pass --data DIR / set RFR_DEMO_DATA")


def find_lfw(explicit: Path | None) -> Path | None:
    candidates = [explicit] if explicit else []
    env = os.environ.get("RFR_DEMO_DATA")
    if env:
        candidates.append(Path(env))
    repo = Path(__file__).resolve().parents[1]
    candidates += [repo.parent / "shared" / "faces" / "lfw", Path.cwd().parent / "shared" / "faces" / "lfw"]
    return next((c for c in candidates if c is not None and c.is_dir()), None)


def faces_source(settings: Settings, explicit: Path | None, *, progress: bool = True) -> Path:
    """The folder of identity folders the demo uses: ``explicit`` (``--data``), ``RFR_DEMO_DATA``,
    ``../shared/faces/lfw``, else LFW downloaded once into ``settings.datasets.dir``
    (:func:`rfr.tools.datasets.fetch_lfw`).

    Raises :class:`NoFacesError` when a named folder is missing, or nothing local exists and the download is off
    or fails (offline: the message lists each URL tried and how to use a local folder or a mirror).
    """
    from rfr.tools.datasets import DatasetUnavailableError, fetch_lfw

    named = explicit or (Path(os.environ["RFR_DEMO_DATA"]) if os.environ.get("RFR_DEMO_DATA") else None)
    if named is not None and not named.is_dir():
        raise NoFacesError(f"{named} (from --data or RFR_DEMO_DATA) is not a folder")
    local = find_lfw(explicit)
    if local is not None:
        return local
    cfg = settings.datasets
    if not cfg.download:
        raise NoFacesError(NO_FACES + " (download of LFW is off: RFR_DATASETS__DOWNLOAD=false)")
    cache = cfg.dir or settings.model_dir / "datasets"
    typer.echo(f"no local faces: fetching LFW (about 180 MB, once) into {cache} …", err=True)
    try:
        return fetch_lfw(cache, cfg.lfw_urls, cfg.lfw_sha256, timeout_s=cfg.timeout_s, progress=progress)
    except DatasetUnavailableError as exc:
        raise NoFacesError(
            f"{NO_FACES}.\n{exc}\nWithout internet: extract lfw.tgz (lfw/<Name>/<Name>_0001.jpg) anywhere and pass "
            f"--data DIR or set RFR_DEMO_DATA=DIR, or serve the archive nearby and set "
            f"RFR_DATASETS__LFW_URLS='[\"http://HOST/lfw.tgz\"]' (and RFR_DATASETS__LFW_SHA256 for another archive)."
        ) from exc


def pick_split(lfw: Path, identities: int, strangers: int, seed: int) -> tuple[list[list[Path]], list[Path]]:
    """(enrolled identities' photos, first = gallery photo), non-enrolled people's photos; seeded."""
    rng = np.random.default_rng(seed)
    people = identity_folders(lfw)
    multi = [photos for photos in people.values() if len(photos) >= 2]
    singles = [photos[0] for photos in people.values() if len(photos) == 1]
    chosen = [multi[i] for i in sorted(rng.choice(len(multi), size=min(identities, len(multi)), replace=False))]
    others = [singles[i] for i in sorted(rng.choice(len(singles), size=min(strangers, len(singles)), replace=False))]
    return chosen, others


def cctv_still(photo: Path, face_px: int, level: str, rng: np.random.Generator) -> bytes:
    from rfr.tools.degrade import place_in_scene

    bgr = cv2.imread(str(photo), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read {photo}")
    rgb = np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)
    scene, _ = place_in_scene(rgb, face_px, (1280, 720), level, rng)
    return encode_jpeg(scene, 85)


def demo_settings(settings: Settings) -> Settings:
    """The demo's own stack under ``<state dir>/demo/stack`` (its gallery, blobs and logs), so the demo never
    enrols its people into the gallery of the user's own stack; it is cleared at the next demo."""
    work = settings.stack.state_dir.resolve() / "demo"
    return settings.model_copy(update={"stack": settings.stack.model_copy(update={"state_dir": work / "stack"}),
                                       "blob_dir": work / "blobs"})


def prepare(work: Path, lfw: Path, identities: int, strangers: int, face_px: int, level: str,
            seed: int) -> tuple[Path, list[Probe]]:
    """The demo's gallery folder (``work/gallery``, cleared first) and its probe stills."""
    from rfr.core.schemas import submission_id

    shutil.rmtree(work / "gallery", ignore_errors=True)
    gallery = work / "gallery"
    enrolled, others = pick_split(lfw, identities, strangers, seed)
    rng = np.random.default_rng(seed)
    probes = []
    for photos in enrolled:
        subject = photos[0].parent.name
        (gallery / subject).mkdir(parents=True)
        shutil.copy(photos[0], gallery / subject / photos[0].name)
        jpeg = cctv_still(photos[1], face_px, level, rng)
        probes.append(Probe(subject, True, jpeg, submission_id(RETAILER, jpeg)))
    for photo in others:
        jpeg = cctv_still(photo, face_px, level, rng)
        probes.append(Probe(photo.parent.name, False, jpeg, submission_id(RETAILER, jpeg)))
    return gallery, probes


@contextmanager
def running_stack(settings: Settings, *, keep: bool = False) -> Iterator[None]:
    """The demo's stack for the block; stopped afterwards, unless ``keep`` and the block succeeded."""
    from rfr.tools import stack

    typer.echo("starting broker, milvus-lite and the six services on 127.0.0.1 …")
    stack.up(settings)
    ok = False
    try:
        yield
        ok = True
    finally:
        if not (keep and ok):
            stopped = stack.down(settings)
            typer.echo(f"stopped: {', '.join(stopped)}")


def running_from(settings: Settings) -> list[str]:
    """Names of the live processes ``settings``' state dir records (a stack from `rfr up` or `rfr demo --keep`)."""
    from rfr.tools import procs, stack

    return [i.name for i in procs.StateFile(stack.plan(settings).state_dir).load() if procs.pid_alive(i)]


def hand_over(own: Settings, demo_stack: Settings) -> None:
    """Record the demo stack's processes in the state file of the user's own stack (``own``), so that `rfr down`
    stops them and `rfr status` shows them."""
    from rfr.tools import procs, stack

    infos = procs.StateFile(stack.plan(demo_stack).state_dir).load()
    procs.StateFile(stack.plan(own).state_dir).save(infos)


def demo_accounts(settings: Settings) -> list[tuple[str, str, str]]:
    """Create :data:`DEMO_ACCOUNTS` with random passwords in the review database of ``settings`` (audited as the
    CLI's administrator); return (name, role, password). Raises ``UserError`` (e.g. a name exists) or a database
    error."""
    from rfr.core.db import make_engine
    from rfr.core.settings import review_database_url, review_secret
    from rfr.review.audit import AuditLog
    from rfr.review.store import ReviewStore
    from rfr.review.users import Role, UserStore
    from rfr.tools.review_cli import cli_principal

    engine = make_engine(review_database_url(settings))
    try:
        audit = AuditLog(engine, review_secret(settings), settings.review.checkpoint_every)
        ReviewStore.open(engine, audit, two_person=settings.review.two_person)  # schema (the service made it)
        users = UserStore(engine, audit, session_ttl_s=settings.review.session_ttl_s)
        made = []
        for name, role in DEMO_ACCOUNTS:
            password = secrets.token_urlsafe(12)
            users.create_user(name, Role(role), password, cli_principal(), reason="rfr demo --keep")
            made.append((name, role, password))
        return made
    finally:
        engine.dispose()


def show_kept(settings: Settings, accounts: list[tuple[str, str, str]]) -> None:
    review = f"http://{settings.review.http_host}:{settings.review.http_port}"
    typer.echo(f"\nThe demo's stack keeps running (state and logs in {settings.stack.state_dir}). Review pages: "
               f"{review}/ (API {review}/v1). Demo accounts, shown only now:")
    for name, role, password in accounts:
        typer.echo(f"    {name:16} {role:11} password {password}")
    typer.echo("Sign in as one reviewer to decide a case and as the other to verify it. `rfr down` stops the stack.")
    state, blobs = settings.stack.state_dir.resolve(), settings.blob_dir.resolve()
    typer.echo(f"The `rfr review`, `rfr audit`, `rfr retention`, `rfr api-keys` and `rfr submit` commands act on the "
               f"stack of the state dir they are given; for this demo's:\n    export RFR_STACK__STATE_DIR={state} "
               f"RFR_BLOB_DIR={blobs}\n(the next `rfr demo` starts a new demo stack: these accounts and cases go).")


def submit(settings: Settings, probes: list[Probe]) -> None:
    from rfr.core.kafka import DeliveryTracker, Output, make_producer
    from rfr.core.topics import Topics
    from services.ingest.handler import submission_headers

    topic = Topics.from_settings(settings.kafka).submissions
    now = datetime.now(UTC).isoformat()
    tracker = DeliveryTracker(make_producer(settings.kafka))
    headers = dict((k, v.decode()) for k, v in submission_headers(RETAILER, STORE, CAMERA, now))
    tracker.produce(Output(topic, p.jpeg, key=f"{RETAILER}/{STORE}/{CAMERA}", headers=headers) for p in probes)
    tracker.flush()


def enrol(settings: Settings, gallery: Path) -> None:
    from rfr.tools import stack

    typer.echo(f"enrolling the gallery from {gallery} …")
    # --allow-partial: a gallery photo without a usable face is reported per file, and the demo goes on
    done = subprocess.run([sys.executable, "-m", "rfr", "enrol", str(gallery), "--watch-list", "custody",
                           "--no-progress", "--allow-partial"], check=False, capture_output=True, text=True,
                          env=stack.service_env(settings, stack.plan(settings)))
    if done.returncode != 0:
        raise RuntimeError(f"enrolment failed:\n{done.stdout}\n{done.stderr}")
    summary = done.stdout[done.stdout.find("{"):] if "{" in done.stdout else "{}"
    try:
        figures = json.loads(summary)
    except ValueError:
        figures = {}
    typer.echo("enrolled: " + ", ".join(f"{k} {v}" for k, v in figures.items() if isinstance(v, int | float)))


def show(probes: list[Probe], results: dict[str, SubmissionResult]) -> tuple[int, int, int, int]:
    """Print one block per probe; return (enrolled probes, rank-1 right, strangers, strangers with no list)."""
    n_enrolled = right = n_strangers = quiet = 0
    for p in probes:
        res = results.get(p.submission_id)
        status = res.final_status if res is not None and res.final else "no result (timed out)"
        if res is not None and res.final and not res.lists:
            status += "".join(f" ({o.detail})" for o in res.outcomes if o.detail)
        lists = sorted(res.lists.values(), key=lambda c: c.face_id) if res is not None else []
        best = res.best_subject if res is not None else None
        label = "enrolled" if p.enrolled else "not enrolled"
        typer.echo(f"\nprobe {p.submission_id}  (truth, known to the demo only: {p.truth}, {label})  -> {status}")
        for cl in lists:
            for c in cl.candidates[:3]:
                mark = "  <- same person" if c.subject_id == p.truth else ""
                typer.echo(f"    #{c.rank} {c.subject_id:32} score {c.score:.3f}  [{c.watch_list}]{mark}")
        if p.enrolled:
            n_enrolled += 1
            right += int(best == p.truth)
        else:
            n_strangers += 1
            quiet += int(best is None)
    return n_enrolled, right, n_strangers, quiet


@app.command()
def demo(
    identities: Annotated[int, typer.Option(help="People enrolled (one photo each).")] = 30,
    strangers: Annotated[int, typer.Option(help="Probes of people who are not enrolled.")] = 10,
    face_px: Annotated[int, typer.Option(help="Face width in the CCTV-like stills (pixels).")] = 64,
    level: Annotated[str, typer.Option(help="Degradation: clean, mild or hard.")] = "mild",
    data: Annotated[Path | None, typer.Option(
        help="Folder per identity (default: ../shared/faces/lfw, else LFW downloaded once into the cache).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the split and the degradation.")] = 7,
    timeout_s: Annotated[float, typer.Option(help="How long to wait for every still's outcome.")] = 600.0,
    keep: Annotated[bool, typer.Option(help="Leave the stack running afterwards, with demo accounts of the review "
                                            "pages (printed); `rfr down` stops it.")] = False,
) -> None:
    """Run the whole pipeline end to end on the embedded default and print the candidate lists."""
    from rfr.core.logs import setup_logging
    from rfr.core.settings import load_settings
    from rfr.models import fetch_models
    from rfr.tools.results import ResultCollector

    settings = load_settings()
    setup_logging("WARNING")
    try:
        lfw = faces_source(settings, data)
    except NoFacesError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    own, running = settings, running_from(settings)
    if running:
        typer.echo(f"a stack is running from {settings.stack.state_dir} ({', '.join(running)}): `rfr down` first",
                   err=True)
        raise typer.Exit(1)
    fetch_models(settings.model_dir)
    work = settings.stack.state_dir.resolve() / "demo"
    shutil.rmtree(work, ignore_errors=True)  # the last demo's stack and gallery
    settings = demo_settings(settings)
    gallery, probes = prepare(work, lfw, identities, strangers, face_px, level, seed)
    typer.echo(f"{len(probes)} CCTV-like stills ({face_px}px faces, {level}) of {identities} enrolled and "
               f"{strangers} non-enrolled people, from {lfw}")
    with running_stack(settings, keep=keep):
        enrol(settings, gallery)
        collector = ResultCollector(settings.kafka, f"rfr-demo-{int(time.time())}")
        started = time.monotonic()
        submit(settings, probes)
        complete = collector.wait_for([p.submission_id for p in probes], timeout_s)
        elapsed = time.monotonic() - started
        collector.close()
        accounts = demo_accounts(settings) if keep else []
    if keep:
        hand_over(own, settings)
    n_enrolled, right, n_strangers, quiet = show(probes, dict(collector.results))
    typer.echo(f"\n{len(probes)} stills through the pipeline in {elapsed:.1f}s. Enrolled people ranked first: "
               f"{right}/{n_enrolled}. Non-enrolled people with no candidate above the threshold: "
               f"{quiet}/{n_strangers}.\nCandidate lists are for trained human review; none is an identification.")
    if keep:
        show_kept(settings, accounts)
    if not complete:
        typer.echo("some stills had no final outcome in time (see .rfr/core/logs)", err=True)
        raise typer.Exit(1)
