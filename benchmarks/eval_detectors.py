"""Identification through two detectors on the same splits, paired probe by probe (issue 16). Prints JSON.

    .venv/bin/python -m benchmarks.eval_detectors [--seeds 0,1,2] [--detectors mediapipe,litert] [--out FILE]

For each seed, ``rfr eval``'s own run (:func:`rfr.tools.eval.runner.run_eval`: the split of
``rfr eval --labelled DIR --enrolled 200 --nonmated 250 --distractors 300 --max-probes 2 --seed S --degrade clean,mild
--face-px 48 --searcher memory``) is made once per detector, in this process, one after the other. The scenes are
framed by the reference detector whichever is measured (:func:`rfr.tools.eval.runner.framing_detector`), so both see
the same pixels; enrolment goes through the detector measured, as the product enrols.

Reported per seed and condition: each detector's rank-1 (hits of the mated probes; a probe not searched is a miss).
Pooled over the seeds, per condition: the hits, the discordant probes (``first_only``: the first detector's rank-1
hit that the second missed; ``second_only``: the reverse), McNemar's exact two-sided p-value on them, and the paired
difference in rank-1 (second minus first) with its 95 % interval. Splits of different seeds share photos (a photo is
drawn as a probe in several seeds; the scenes made of it differ), so their probes are not independent: ``by_photo``
counts each photo once (a sign test over the photos whose probes favour one detector, and a bootstrap over photos for
the interval), and is the figure to judge by. ``pairs`` holds every probe's two outcomes.

About 2.5 minutes a detector and seed on 2 shared cores.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import emit  # noqa: E402
from rfr.core.settings import Settings, load_settings  # noqa: E402

CONDITIONS = ("original", "clean", "mild")
Hits = dict[tuple[str, str], bool]
"""(sample id, condition) -> rank-1 hit, for the mated probes of one run."""


def mcnemar_p(first_only: int, second_only: int) -> float:
    """Exact two-sided McNemar p-value: the chance, with no difference between the detectors, of a split of the
    discordant probes at least this uneven (binomial, p = 1/2). 1.0 with no discordant probe."""
    n = first_only + second_only
    if n == 0:
        return 1.0
    k = min(first_only, second_only)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def paired(first: Hits, second: Hits) -> dict[str, Any]:
    """Compare two runs over the probes both hold: hits, discordant counts, McNemar p, and the paired difference in
    rank-1 (second minus first) with its 95 % normal interval. Raises ValueError when they share no probe."""
    keys = sorted(first.keys() & second.keys())
    if not keys:
        raise ValueError("the two runs share no probe")
    n = len(keys)
    first_only = sum(first[k] and not second[k] for k in keys)
    second_only = sum(second[k] and not first[k] for k in keys)
    diff = (second_only - first_only) / n
    var = ((first_only + second_only) / n - diff**2) / n
    half = 1.96 * math.sqrt(max(var, 0.0))
    return {"probes": n, "first_hits": sum(first[k] for k in keys), "second_hits": sum(second[k] for k in keys),
            "first_only": first_only, "second_only": second_only,
            "mcnemar_p": round(mcnemar_p(first_only, second_only), 4),
            "rank1_difference": round(diff, 4), "difference_ci95": [round(diff - half, 4), round(diff + half, 4)]}


def hits_of(settings: Settings, lfw: Path, seed: int) -> Hits:
    """Rank-1 hit of every mated probe of ``rfr eval``'s split of ``seed``, through ``settings``' detector."""
    from rfr.tools.eval import splits
    from rfr.tools.eval.runner import EvalOptions, run_eval
    from rfr.tools.train.split import training_identities

    plan = splits.LabelledPlan(200, 250, 300, 2, seed, "any", training_identities(lfw))
    options = EvalOptions(levels=CONDITIONS[1:], face_px=48.0, seed=seed, gallery="memory",
                          batch_size=settings.embed.batch_size)
    run = run_eval(settings, splits.from_labelled(lfw, plan), options)
    return {(o.sample_id, o.condition): bool(o.candidates) and o.candidates[0][0] == o.subject
            for o in run.outcomes if o.mated}


def rates(hits: Hits) -> dict[str, dict[str, float | int]]:
    """Per condition: mated probes, hits and rank-1."""
    out: dict[str, dict[str, float | int]] = {}
    for condition in CONDITIONS:
        mine = [hit for (_, c), hit in hits.items() if c == condition]
        out[condition] = {"mated": len(mine), "hits": sum(mine), "rank1": round(sum(mine) / len(mine), 4)}
    return out


def by_photo(first: Hits, second: Hits, resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """The same comparison with each photo counted once: pooled keys are ``<seed>:<sample id>``, and one photo is
    drawn in several seeds' splits, so its probes are not independent. Per photo, the net number of its probes that
    only the second detector found minus those only the first found; an exact sign test over the photos whose net is
    not 0; and the 95 % interval of the pooled rank-1 difference from a bootstrap that resamples photos."""
    net: dict[str, int] = {}
    count: dict[str, int] = {}
    for key in first.keys() & second.keys():
        photo = key[0].split(":", 1)[1]
        net[photo] = net.get(photo, 0) + int(second[key]) - int(first[key])
        count[photo] = count.get(photo, 0) + 1
    photos = sorted(net)
    better, worse = sum(net[p] > 0 for p in photos), sum(net[p] < 0 for p in photos)
    nets = np.asarray([net[p] for p in photos], np.float64)
    counts = np.asarray([count[p] for p in photos], np.float64)
    draws = np.random.default_rng(seed).integers(0, len(photos), (resamples, len(photos)))
    diffs = nets[draws].sum(axis=1) / counts[draws].sum(axis=1)
    low, high = np.percentile(diffs, [2.5, 97.5])
    return {"photos": len(photos), "photos_better": better, "photos_worse": worse,
            "sign_test_p": round(mcnemar_p(worse, better), 4),
            "difference_ci95_photo_bootstrap": [round(float(low), 4), round(float(high), 4)]}


def pooled(runs: Mapping[int, Sequence[Hits]]) -> dict[str, Any]:
    """The paired comparison per condition over every seed (keys made unique per seed), probe by probe and photo by
    photo (:func:`by_photo`)."""
    first: Hits = {}
    second: Hits = {}
    for seed, (a, b) in runs.items():
        first |= {(f"{seed}:{s}", c): hit for (s, c), hit in a.items()}
        second |= {(f"{seed}:{s}", c): hit for (s, c), hit in b.items()}
    out: dict[str, Any] = {}
    for c in CONDITIONS:
        mine_first = {k: v for k, v in first.items() if k[1] == c}
        mine_second = {k: v for k, v in second.items() if k[1] == c}
        out[c] = paired(mine_first, mine_second) | {"by_photo": by_photo(mine_first, mine_second)}
    return out


def pairs(runs: Mapping[int, Sequence[Hits]]) -> dict[str, dict[str, str]]:
    """Every mated probe's two outcomes, so the pooled figures can be recomputed from the report: per condition and
    seed, one line of ``<sample id>=<first hit><second hit>`` (hits 0 or 1), space-separated, sorted."""
    out: dict[str, dict[str, str]] = {c: {} for c in CONDITIONS}
    for seed, (a, b) in sorted(runs.items()):
        for c in CONDITIONS:
            keys = sorted(s for s, cc in a.keys() & b.keys() if cc == c)
            out[c][str(seed)] = " ".join(f"{s}={int(a[(s, c)])}{int(b[(s, c)])}" for s in keys)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw-dir", type=Path, default=REPO.parent / "shared" / "faces" / "lfw")
    parser.add_argument("--seeds", default="0,1,2,3,4,5,6,7")
    parser.add_argument("--detectors", default="mediapipe,litert", help="two: the first is the one compared against")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    detectors = [d.strip() for d in args.detectors.split(",") if d.strip()]
    if len(detectors) != 2:
        parser.error("--detectors names two detectors")
    if not args.lfw_dir.is_dir():
        parser.error(f"no labelled faces at {args.lfw_dir} (see ../shared/README.md)")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    base = load_settings()
    started = time.perf_counter()
    runs: dict[int, list[Hits]] = {}
    per_seed: list[dict[str, Any]] = []
    for seed in seeds:
        runs[seed] = [hits_of(base.model_copy(update={"detect": base.detect.model_copy(update={"detector": d})}),
                              args.lfw_dir, seed) for d in detectors]
        per_seed.append({"seed": seed, **{d: rates(h) for d, h in zip(detectors, runs[seed], strict=True)}})
        print(json.dumps(per_seed[-1]), file=sys.stderr)
    report = {
        "benchmark": "identification through two detectors, paired",
        "command": " ".join(["python -m benchmarks.eval_detectors", *sys.argv[1:]]),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "loadavg_at_end": [round(v, 2) for v in os.getloadavg()]},
        "detectors": {"first": detectors[0], "second": detectors[1]},
        "per_seed": per_seed, "pooled": pooled(runs), "seconds": round(time.perf_counter() - started, 1),
        "pairs": pairs(runs),
    }
    return emit(report, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
