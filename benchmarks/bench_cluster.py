"""Purity of the repeat-unknown cluster rule (rfr/cluster/rule.py) on degraded stills of the shared faces. Prints JSON.

    .venv/bin/python -m benchmarks.bench_cluster [--quick] [--out FILE] [--face-px 48,64,40] [--levers]

Sightings: every photo of the LFW identities with >= 3 photos (a repeat offender seen once per photo, each photo a
different still), mixed with as many one-off strangers (single-photo identities, one sighting each) as there are
repeat sightings; the embedder fine-tune's training identities (rfr/tools/train/split.py) are left out, as
``rfr eval`` does. Each photo becomes a mild-CCTV 1920x1080 still with the face ``face_px`` wide
(:mod:`rfr.tools.eval.scenes`, framed from its detection in the original photo) and goes through the product's
decode -> detect -> align -> quality gate (:meth:`rfr.tools.eval.probes.ProbeRunner.find`) and embedder. Each
sighting is given a seeded random store of one of ``--retailers`` retailers (``--stores`` stores each). A face the
gate stops is not clustered (as the cluster service, ``cluster.include_low_quality`` false): every such loss is
counted per reason, and ``*_all_sightings`` recall counts the lost faces as missed.

Identities (strangers too) are split in two seeded halves (:func:`rfr.tools.eval.splits.half_of`). On the
CALIBRATION half a grid of (link_threshold, merge_threshold) is run over ``--orders`` seeded random arrival orders;
the pair chosen is the one with the highest median pairwise recall whose precision is >= the target in EVERY order
(the margin: the run-to-run spread of precision with arrival order). The chosen pair is then REPORTED on the other
half (medians over the same number of orders): pairwise and BCubed scores, clusters, merges, and the reportable
clusters (``min_sightings`` at ``min_stores``): repeat offenders caught by a cluster of their own sightings, and
reportable clusters holding more than one identity. The current ClusterSettings defaults are reported beside.

Found faces are cached per condition in ``--cache`` (a local pickle this command wrote; never point it at a file
from elsewhere); embeddings are recomputed each run. ``--levers`` also measures mirror TTA, the fine-tuned model,
average linkage and the neighbour count at the first face width (6 minutes on 2 shared cores with the faces cached,
about 8 more per face width to find them, mostly drawing the 1080p scenes). ``--hubness`` measures the hubness
correction (``cluster.hubness_k``) there: its cohorts are the single-photo identities clustered in NEITHER half,
made into stills the same way, split in two groups, one for each half (:func:`cohort_sightings`), so thresholds are
chosen without any face of the report half and reported with another cohort than they were chosen with (~3 minutes
a variant, plus ~6 to find the cohort faces at a new width).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import pickle
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import emit  # noqa: E402
from rfr.cluster.rule import ClusterRule, Hubness, MemoryClusters, pairwise_scores  # noqa: E402
from rfr.core.image_files import identity_folders  # noqa: E402
from rfr.core.imaging import ImageLimits  # noqa: E402
from rfr.core.settings import Settings, load_settings  # noqa: E402
from rfr.tools.eval.probes import FAILURES, ORIGINAL, Condition, FoundProbe, ProbeRunner, StageTimes  # noqa: E402
from rfr.tools.eval.splits import CALIBRATION, EVALUATION, Probe, Sample, half_of  # noqa: E402
from rfr.tools.train.split import training_identities  # noqa: E402

logger = logging.getLogger("bench_cluster")
Vectors = npt.NDArray[np.float32]
SCENE = (1920, 1080)
LEVEL = "mild"
PRECISION_TARGET = 0.95
RECALL_TARGET = 0.70
LINKS = tuple(round(x, 2) for x in np.arange(0.40, 0.805, 0.02))
HUB_LINKS = tuple(round(x, 2) for x in np.arange(0.10, 0.505, 0.02))  # the hubness-corrected scale is ~0.45 lower
MERGE_STEPS = (0.0, 0.05, 0.1)  # merge_threshold = link_threshold + step (wider steps never merged in trials)


@dataclass(frozen=True)
class Sighting:
    """One still: whose face (``identity``), a repeat offender's or a stranger's, at which store, which half."""

    sample: Sample
    repeat: bool
    store: str
    half: str


def sightings(root: Path, seed: int, stranger_ratio: float, limit: int | None, retailers: int,
              stores: int) -> list[Sighting]:
    """Every photo of each non-training identity with >= 3 photos (``limit`` identities at most, seeded) and
    ``ceil(stranger_ratio x`` those photos) single-photo identities, each at a seeded random store."""
    ids = identity_folders(root)
    trained = training_identities(root)
    rng = np.random.default_rng([seed, 0xC1])
    repeat = sorted(i for i, p in ids.items() if i not in trained and len(p) >= 3)
    if limit is not None and limit < len(repeat):
        repeat = sorted(str(x) for x in rng.choice(repeat, size=limit, replace=False))
    photos = sum(len(ids[i]) for i in repeat)
    singles = sorted(i for i, p in ids.items() if i not in trained and len(p) == 1)
    n_strangers = min(len(singles), int(np.ceil(stranger_ratio * photos)))
    strangers = sorted(str(x) for x in rng.choice(singles, size=n_strangers, replace=False))
    out = []
    for identity in [*repeat, *strangers]:
        for path in ids[identity]:
            store = f"r{rng.integers(retailers)}/s{rng.integers(stores)}"
            out.append(Sighting(Sample(identity, path), identity in repeat, store, half_of(identity, seed)))
    return out


def cohort_sightings(root: Path, seen: Sequence[Sighting], seed: int) -> list[Sighting]:
    """The hubness cohorts' faces: every non-training single-photo identity NOT among ``seen`` (clustered in
    neither half), split in two by :func:`half_of`; ``half`` names which half's clustering it corrects (the
    calibration half gets one group, the report half the other), so thresholds are chosen without any face of the
    half they are reported on, and with another cohort than the one they are reported with."""
    ids = identity_folders(root)
    trained, used = training_identities(root), {s.sample.identity for s in seen}
    spare = sorted(i for i, p in ids.items() if i not in trained and i not in used and len(p) == 1)
    return [Sighting(Sample(i, ids[i][0]), False, "cohort", half_of(i, seed + 1)) for i in spare]


def find_faces(settings: Settings, seen: Sequence[Sighting], face_px: float, seed: int,
               cache: Path | None) -> tuple[list[FoundProbe], dict[str, float]]:
    """Each sighting's face as the detect stage finds it in its mild 1080p still (cached per condition)."""
    key = hashlib.sha256("\n".join([*(s.sample.sample_id for s in seen), repr((face_px, SCENE, LEVEL, seed)),
                                    settings.detect.model_dump_json(), settings.ingest.model_dump_json()
                                    ]).encode()).hexdigest()
    path = cache.with_name(f"{cache.stem}-{face_px:g}px-{key[:10]}{cache.suffix}") if cache else None
    if path is not None and path.exists():
        with path.open("rb") as fh:
            held, found, times = pickle.load(fh)  # our own cache (see the module docstring)
        if held == key:
            return found, times
    found, times = _detect(settings, seen, face_px, seed)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as fh:
            pickle.dump((key, found, times), fh, protocol=pickle.HIGHEST_PROTOCOL)
    return found, times


def _detect(settings: Settings, seen: Sequence[Sighting], face_px: float,
            seed: int) -> tuple[list[FoundProbe], dict[str, float]]:
    from rfr.tools.eval.runner import eval_detector

    probes = [Probe(s.sample, s.repeat, s.half) for s in seen]
    original = Condition(ORIGINAL)
    still = Condition(LEVEL, LEVEL, face_px, SCENE, seed, backgrounds=8)
    times = {"original": StageTimes(), "still": StageTimes()}
    with eval_detector(settings) as detector:
        runner = ProbeRunner(detector, settings.detect, None, None, "", {}, 1,  # type: ignore[arg-type]
                             limits=ImageLimits.from_settings(settings.ingest))
        for p in probes:  # the original photo frames the face of its still (by the detector in use: one here)
            runner.find(p, original, times["original"])
        found = []
        for i, p in enumerate(probes):
            found.append(runner.find(p, still, times["still"]))
            if (i + 1) % 200 == 0:
                logger.info("%g px: %d/%d stills", face_px, i + 1, len(probes))
    t = times["still"]
    return found, {"scene_s": round(t.scene, 1), "decode_s": round(t.decode, 1), "detect_s": round(t.detect, 1),
                   "ms_per_still_detect": round(1000 * t.detect / max(1, len(probes)), 1)}


def embed(settings: Settings, found: Sequence[FoundProbe], update: dict[str, Any]) -> tuple[Vectors, str]:
    """Unit embeddings of every found crop (zeros where none), by ``settings.embed`` with ``update``."""
    from rfr.embedding.embedder import load_embedder

    embedder = load_embedder(settings.embed.model_copy(update=update), settings.model_dir).load()
    out = np.zeros((len(found), embedder.dim), np.float32)
    rows = [i for i, f in enumerate(found) if f.crop is not None]
    for start in range(0, len(rows), 32):
        part = rows[start:start + 32]
        out[part] = embedder.embed(np.stack([found[i].crop for i in part]))  # type: ignore[misc]
    return out, embedder.model_id


def accounting(seen: Sequence[Sighting], found: Sequence[FoundProbe]) -> dict[str, Any]:
    """Sightings per group and half, and how many the pipeline lost before clustering, per reason."""
    out: dict[str, Any] = {}
    for group, repeat in (("repeat", True), ("strangers", False)):
        for half in (CALIBRATION, EVALUATION):
            rows = [f for s, f in zip(seen, found, strict=True) if s.repeat == repeat and s.half == half]
            lost = {r: sum(f.failure == r for f in rows) for r in FAILURES}
            out[f"{group}_{half}"] = {"sightings": len(rows), "identities": len({f.probe.sample.identity
                                                                                  for f in rows}),
                                      "clustered": len(rows) - sum(lost.values()), "lost": lost}
    return out


@dataclass(frozen=True)
class Half:
    """The clustered sightings of one half: unit vectors, identity, store and whether a repeat offender's."""

    vectors: Vectors
    identity: tuple[str, ...]
    store: tuple[str, ...]
    repeat: tuple[bool, ...]
    lost_pairs: int  # same-identity pairs lost with the faces the pipeline dropped


def half(seen: Sequence[Sighting], found: Sequence[FoundProbe], vectors: Vectors, name: str) -> Half:
    keep = [i for i, (s, f) in enumerate(zip(seen, found, strict=True)) if s.half == name and f.failure is None]
    every: dict[str, int] = {}
    for s in seen:
        if s.half == name:
            every[s.sample.identity] = every.get(s.sample.identity, 0) + 1
    kept: dict[str, int] = {}
    for i in keep:
        kept[seen[i].sample.identity] = kept.get(seen[i].sample.identity, 0) + 1
    pairs = sum(n * (n - 1) for n in every.values()) - sum(n * (n - 1) for n in kept.values())
    return Half(vectors[keep], tuple(seen[i].sample.identity for i in keep), tuple(seen[i].store for i in keep),
                tuple(seen[i].repeat for i in keep), pairs // 2)


def cluster_once(data: Half, rule: ClusterRule, order_seed: int) -> dict[str, float]:
    """The rule over ``data`` in one seeded arrival order: scores, clusters, merges and reportable clusters."""
    order = np.random.default_rng([order_seed, 0x0D]).permutation(len(data.identity))
    clusters = MemoryClusters(rule)
    for i in order:
        clusters.add(data.vectors[i])
    labels = [""] * len(order)
    for pos, label in zip(order, clusters.labels(), strict=True):
        labels[int(pos)] = label
    scores = pairwise_scores(data.identity, labels)
    together = round(scores["pairwise_recall"] * _pairs(data.identity))
    scores["pairwise_recall_all_sightings"] = together / max(1, _pairs(data.identity) + data.lost_pairs)
    return scores | _reportable(data, labels, rule) | {"clusters": len(set(labels)), "merges": clusters.merges}


def _pairs(labels: Sequence[str]) -> int:
    counts: dict[str, int] = {}
    for x in labels:
        counts[x] = counts.get(x, 0) + 1
    return sum(n * (n - 1) // 2 for n in counts.values())


def _reportable(data: Half, labels: Sequence[str], rule: ClusterRule) -> dict[str, float]:
    """Reportable clusters, the impure ones among them, and the repeat offenders caught: those with a reportable
    set of sightings that lie in one reportable cluster (``catchable``: those whose clustered sightings could)."""
    members: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        members.setdefault(label, []).append(i)

    def reportable(rows: Sequence[int]) -> bool:
        return rule.reportable(len(rows), len({data.store[i] for i in rows}))

    reported = [rows for rows in members.values() if reportable(rows)]
    caught: set[str] = set()
    for rows in reported:
        for who in {data.identity[i] for i in rows}:
            if reportable([i for i in rows if data.identity[i] == who]):
                caught.add(who)
    by_id: dict[str, list[int]] = {}
    for i, who in enumerate(data.identity):
        if data.repeat[i]:
            by_id.setdefault(who, []).append(i)
    return {"reportable_clusters": len(reported),
            "impure_reportable": sum(len({data.identity[i] for i in rows}) > 1 for rows in reported),
            "offenders": len({data.identity[i] for i in range(len(labels)) if data.repeat[i]}),
            "offenders_catchable": sum(reportable(rows) for rows in by_id.values()),
            "offenders_caught": len(caught)}


def over_orders(data: Half, rule: ClusterRule, orders: int, seed: int) -> dict[str, Any]:
    """Median of each figure over ``orders`` arrival orders, and the least precision of any order."""
    runs = [cluster_once(data, rule, seed * 1000 + k) for k in range(orders)]
    out: dict[str, Any] = {k: round(statistics.median(r[k] for r in runs), 4) for k in runs[0]}
    out["pairwise_precision_min"] = round(min(r["pairwise_precision"] for r in runs), 4)
    return out


def calibrate(data: Half, base: ClusterRule, orders: int, seed: int) -> dict[str, Any]:
    """The (link, merge) thresholds with the highest median recall whose precision is >= the target in every
    order; with none there, the most precise pair (reported as not meeting the target)."""
    best: tuple[tuple[float, ...], ClusterRule, dict[str, Any]] | None = None
    for link in (LINKS if base.hubness is None else HUB_LINKS):
        for step in MERGE_STEPS:
            rule = replace(base, link_threshold=link, merge_threshold=round(min(1.0, link + step), 2))
            got = over_orders(data, rule, orders, seed)
            ok = got["pairwise_precision_min"] >= PRECISION_TARGET
            rank = (ok, got["pairwise_recall"] if ok else got["pairwise_precision_min"], got["bcubed_f"], -link)
            if best is None or rank > best[0]:
                best = (rank, rule, got)
    assert best is not None
    return {"link_threshold": best[1].link_threshold, "merge_threshold": best[1].merge_threshold,
            "meets_precision_target": best[0][0], "calibration_half": best[2]}


@dataclass(frozen=True)
class Variant:
    """A lever: ``embed`` applied to EmbedSettings, ``rule`` to the ClusterRule (today: neither); ``hubness_k`` > 0:
    the hubness correction, its cohorts from :func:`cohort_sightings` (embedded by the same ``embed``)."""

    name: str
    embed: tuple[tuple[str, Any], ...] = ()
    rule: tuple[tuple[str, Any], ...] = ()
    hubness_k: int = 0


TODAY = Variant("today")
LEVERS = (TODAY, Variant("mirror TTA", (("tta", "mirror"),)),
          Variant("fine-tuned casia-webface-lowres-v1", (("model", "casia-webface-lowres-v1"),)),
          Variant("mirror TTA + fine-tuned", (("tta", "mirror"), ("model", "casia-webface-lowres-v1"))),
          Variant("average linkage", rule=(("linkage", "average"),)),
          Variant("neighbours 4", rule=(("neighbours", 4),)), Variant("neighbours 64", rule=(("neighbours", 64),)))
HUBNESS_LEVERS = (Variant("hubness k 10", hubness_k=10), Variant("hubness k 20", hubness_k=20),
                  Variant("mirror TTA + hubness k 20", (("tta", "mirror"),), hubness_k=20),
                  Variant("fine-tuned + hubness k 20", (("model", "casia-webface-lowres-v1"),), hubness_k=20))


@dataclass(frozen=True)
class Cohorts:
    """The hubness cohorts' faces (:func:`cohort_sightings`), as found, and their unit vectors (one embedder)."""

    seen: Sequence[Sighting]
    found: Sequence[FoundProbe]
    vectors: Vectors


def evaluate(seen: Sequence[Sighting], found: Sequence[FoundProbe], vectors: Vectors, defaults: ClusterRule,
             variant: Variant, args: argparse.Namespace, cohort: Cohorts | None = None) -> dict[str, Any]:
    """Calibrate the thresholds on the calibration half; report them (and today's defaults) on the other."""
    base = replace(defaults, **dict(variant.rule))
    cal = half(seen, found, vectors, CALIBRATION)
    report = half(seen, found, vectors, EVALUATION)
    started = time.perf_counter()
    cal_base, report_base = base, base
    if variant.hubness_k:
        assert cohort is not None, "a hubness variant needs the cohort faces"
        cal_base = replace(base, hubness=cohort_of(cohort, CALIBRATION, variant.hubness_k))
        report_base = replace(base, hubness=cohort_of(cohort, EVALUATION, variant.hubness_k))
    chosen = calibrate(cal, cal_base, args.orders, args.seed)
    rule = replace(report_base, link_threshold=chosen["link_threshold"], merge_threshold=chosen["merge_threshold"])
    got = over_orders(report, rule, args.orders, args.seed + 1)
    out = {"calibrated": chosen, "report_half": got,
           "meets_target": got["pairwise_precision"] >= PRECISION_TARGET and got["pairwise_recall"] >= RECALL_TARGET}
    if variant.hubness_k:
        out["cohort_faces"] = {"calibration": len(cal_base.hubness.cohort),  # type: ignore[union-attr]
                               "report": len(report_base.hubness.cohort)}  # type: ignore[union-attr]
        out["report_half_at_defaults"] = None  # plain defaults are on another scale
    else:
        out["report_half_at_defaults"] = over_orders(report, base, args.orders, args.seed + 1)
    return out | {"seconds": round(time.perf_counter() - started, 1)}


def cohort_of(cohort: Cohorts, name: str, k: int) -> Hubness:
    """The hubness correction of half ``name``'s clustering: its own group of cohort faces (:func:`cohort_sightings`),
    the faces the gate let through."""
    rows = [i for i, (s, f) in enumerate(zip(cohort.seen, cohort.found, strict=True))
            if s.half == name and f.failure is None]
    return Hubness(cohort.vectors[rows], k, "bench", f"unused single-photo identities ({name} group)")


def condition(settings: Settings, seen: Sequence[Sighting], face_px: float, variants: Sequence[Variant],
              defaults: ClusterRule, args: argparse.Namespace) -> dict[str, Any]:
    found, times = find_faces(settings, seen, face_px, args.seed, args.cache)
    out: dict[str, Any] = {"face_px": face_px, "scene": f"{SCENE[0]}x{SCENE[1]}", "level": LEVEL,
                           "detect": times, "sightings": accounting(seen, found), "variants": {}}
    spare: list[Sighting] = []
    spare_found: list[FoundProbe] = []
    if any(v.hubness_k for v in variants):
        spare = cohort_sightings(args.lfw_dir, seen, args.seed)
        spare_found, _ = find_faces(settings, spare, face_px, args.seed, args.cache)
        out["cohort_sightings"] = {h: sum(s.half == h for s in spare) for h in (CALIBRATION, EVALUATION)}
    embedded: dict[tuple[tuple[str, Any], ...], tuple[Vectors, str]] = {}
    spare_embedded: dict[tuple[tuple[str, Any], ...], Vectors] = {}
    for v in variants:
        if v.embed not in embedded:
            started = time.perf_counter()
            try:
                embedded[v.embed] = embed(settings, found, dict(v.embed))
            except Exception as exc:  # noqa: BLE001 - an unprovisioned model is reported, not fatal
                out["variants"][v.name] = {"error": f"{type(exc).__name__}: {exc}"}
                continue
            logger.info("%g px, %s: embedded in %.0fs", face_px, v.name, time.perf_counter() - started)
        vectors, model_id = embedded[v.embed]
        cohort = None
        if v.hubness_k:  # the cohort faces embedded once per embedder, like the sightings
            if v.embed not in spare_embedded:
                spare_embedded[v.embed] = embed(settings, spare_found, dict(v.embed))[0]
            cohort = Cohorts(spare, spare_found, spare_embedded[v.embed])
        out["variants"][v.name] = {"model_id": model_id, **dict(v.embed), **dict(v.rule), "hubness_k": v.hubness_k,
                                   **evaluate(seen, found, vectors, defaults, v, args, cohort)}
        logger.info("%g px, %s: %s", face_px, v.name, json.dumps(out["variants"][v.name]["report_half"]))
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--lfw-dir", type=Path, default=REPO.parent / "shared" / "faces" / "lfw")
    p.add_argument("--face-px", default="48,64,40", help="face widths in the stills, comma-separated")
    p.add_argument("--strangers", type=float, default=1.0, help="one-off strangers per repeat sighting")
    p.add_argument("--retailers", type=int, default=3)
    p.add_argument("--stores", type=int, default=4, help="stores per retailer")
    p.add_argument("--orders", type=int, default=5, help="seeded arrival orders (medians over them)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--levers", action="store_true", help="also the embedder and rule levers at the first width")
    p.add_argument("--hubness", action="store_true", help="also the hubness-corrected rule at the first width "
                   "(its cohorts: single-photo identities clustered in neither half, found at the same width)")
    p.add_argument("--only", default="", help="with --levers or --hubness: only the levers whose names contain "
                   "one of these comma-separated words (today's defaults always run)")
    p.add_argument("--quick", action="store_true", help="60 repeat identities, 48 px, 3 orders")
    p.add_argument("--cache", type=Path, default=REPO / "benchmarks" / "results" / "bench_cluster_faces.pkl")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.face_px, args.orders = "48", 3
    return args


def levers(args: argparse.Namespace) -> tuple[Variant, ...]:
    """The variants to run at the first width: today's, and the levers ``--levers`` / ``--only`` ask for."""
    if not (args.levers or args.hubness):
        return (TODAY,)
    words = [w.strip() for w in args.only.split(",") if w.strip()]
    pool = (LEVERS[1:] if args.levers else ()) + (HUBNESS_LEVERS if args.hubness else ())
    return (TODAY, *(v for v in pool if not words or any(w in v.name for w in words)))


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    if not args.lfw_dir.is_dir():
        print(json.dumps({"error": f"no labelled faces at {args.lfw_dir}"}))
        return 2
    settings = load_settings()
    c = settings.cluster
    defaults = ClusterRule(c.link_threshold, c.merge_threshold, c.min_sightings, c.min_stores, c.neighbours)
    seen = sightings(args.lfw_dir, args.seed, args.strangers, 60 if args.quick else None, args.retailers,
                     args.stores)
    widths = [float(w) for w in args.face_px.split(",") if w.strip()]
    started = time.perf_counter()
    report: dict[str, Any] = {
        "benchmark": "cluster purity", "command": " ".join(["python -m benchmarks.bench_cluster", *sys.argv[1:]]),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "loadavg_at_start": [round(v, 2) for v in os.getloadavg()]},
        "data": {"lfw_dir": str(args.lfw_dir), "seed": args.seed, "retailers": args.retailers,
                 "stores_per_retailer": args.stores, "orders": args.orders,
                 "repeat_identities": len({s.sample.identity for s in seen if s.repeat}),
                 "repeat_sightings": sum(s.repeat for s in seen), "strangers": sum(not s.repeat for s in seen)},
        "targets": {"pairwise_precision": PRECISION_TARGET, "pairwise_recall": RECALL_TARGET},
        "defaults": {"link_threshold": defaults.link_threshold, "merge_threshold": defaults.merge_threshold,
                     "min_sightings": defaults.min_sightings, "min_stores": defaults.min_stores,
                     "neighbours": defaults.neighbours},
        "conditions": [condition(settings, seen, w, levers(args) if i == 0 else (TODAY,), defaults, args)
                       for i, w in enumerate(widths)],
    }
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["machine"]["loadavg_at_end"] = [round(v, 2) for v in os.getloadavg()]
    return emit(report, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
