"""The evaluation report: one JSON document (top-level ``rank1``), a Markdown rendering and PNG plots.

    report = build_report(run)            # a JSON-ready dict, everything the Markdown and plots need
    paths = write_report(report, out_dir) # report.json, report.md, det.png, cmc.png, quality.png, scores.png

Per condition (the probe photos as they are, then each degradation level): rank-k identification rates, the
detection / quality-gate failure rates, TPIR at fixed FPIR on all probes (in-sample), the threshold calibrated
on the CALIBRATION half and its TPIR/FPIR on the disjoint EVALUATION half, the DET curve, rank-1 by face
size and sharpness, and the rates had the quality gate let every detected face through (``ungated``). The
threshold to ship is the highest of the per-condition calibrated thresholds at the target FPIR, so that FPIR
stays at or below the target in every condition measured.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rfr.gallery import openset as m
from rfr.tools.eval.probes import FAILURES, ORIGINAL, ProbeOutcome
from rfr.tools.eval.runner import EvalRun
from rfr.tools.eval.splits import CALIBRATION, EVALUATION

logger = logging.getLogger(__name__)

REPORT_VERSION = 1
FACE_PX_EDGES = (0.0, 24.0, 32.0, 48.0, 64.0, 96.0, 128.0, math.inf)
SHARPNESS_EDGES = (0.0, 50.0, 100.0, 150.0, 200.0, 300.0, 500.0, 1000.0, math.inf)  # 150: gate_min_sharpness
DET_POINTS = 400
SCORE_EDGES = np.round(np.arange(-1.0, 1.0001, 0.025), 3)


def _point(p: m.OperatingPoint) -> dict[str, Any]:
    return {"target_fpir": p.target_fpir, "threshold": p.threshold, "fpir": p.fpir, "tpir": p.tpir, "fnir": p.fnir,
            "n_mated": p.n_mated, "n_nonmated": p.n_nonmated, "resolvable": p.resolvable}


def _bins(values: Sequence[float], hits: Sequence[bool], gated: Sequence[bool],
          edges: Sequence[float]) -> list[dict[str, Any]]:
    counted = zip(m.rate_by_bins(values, hits, edges), m.rate_by_bins(values, gated, edges), strict=True)
    return [{"lo": b.lo, "hi": b.hi, "n": b.n, "hits": b.hits, "rate": b.rate, "gated": g.hits} for b, g in counted]


def _det(curve: m.DetCurve) -> dict[str, list[float]]:
    n = len(curve.thresholds)
    keep = np.unique(np.linspace(0, n - 1, min(n, DET_POINTS)).round().astype(int)) if n else np.zeros(0, int)
    return {"threshold": [round(float(curve.thresholds[i]), 5) for i in keep],
            "fpir": [float(curve.fpir[i]) for i in keep], "fnir": [float(curve.fnir[i]) for i in keep]}


def _histogram(values: Sequence[float]) -> list[int]:
    finite = [v for v in values if math.isfinite(v)]
    return [int(c) for c in np.histogram(finite, bins=SCORE_EDGES)[0]]


def _operating_points(searches: list[m.Search], targets: Sequence[float]) -> list[dict[str, Any]]:
    if not any(not s.mated for s in searches):
        return []
    return [_point(m.at_fpir(searches, t)) for t in targets]


def _calibrations(outcomes: Sequence[ProbeOutcome], targets: Sequence[float]) -> list[dict[str, Any]]:
    cal = [o.search() for o in outcomes if o.half == CALIBRATION]
    ev = [o.search() for o in outcomes if o.half == EVALUATION]
    if not any(not s.mated for s in cal) or not ev:
        return []
    out = []
    for t in targets:
        c = m.calibrate(cal, ev, t)
        out.append({"target_fpir": t, "threshold": c.threshold, "calibration": _point(c.calibration),
                    "evaluation": _point(c.evaluation)})
    return out


def _quality(outcomes: Sequence[ProbeOutcome]) -> dict[str, Any]:
    faced = [o for o in outcomes if o.mated and o.face_px is not None and o.sharpness is not None]
    hits = [m.mate_rank(o.ungated_search()) == 1 for o in faced]
    gated = [o.failure is not None for o in faced]
    return {
        "population": "mated probes with a detected face, each searched whether or not the quality gate let it "
                      "through; rate = rank-1 identification rate; gated = how many of them the gate rejects",
        "by_face_px": _bins([o.face_px or 0.0 for o in faced], hits, gated, FACE_PX_EDGES),
        "by_sharpness": _bins([o.sharpness or 0.0 for o in faced], hits, gated, SHARPNESS_EDGES),
    }


def condition_report(outcomes: Sequence[ProbeOutcome], ranks: Sequence[int],
                     targets: Sequence[float]) -> dict[str, Any]:
    searches = [o.search() for o in outcomes]
    mated = [s for s in searches if s.mated]
    curve = m.cmc(searches, max(ranks))
    failures = {f: sum(o.failure == f for o in outcomes) for f in FAILURES}
    n = max(1, len(outcomes))
    hits1 = sum(m.mate_rank(s) == 1 for s in mated)
    mate_scores, nonmated_top = m.scores(searches, max(ranks))
    ungated = [o.ungated_search() for o in outcomes]
    ungated_cmc = m.cmc(ungated, max(ranks))
    return {
        "probes": len(outcomes), "mated": len(mated), "nonmated": len(outcomes) - len(mated),
        "failures": failures,
        "detection_failure_rate": failures["no_face"] / n,
        "quality_rejection_rate": failures["low_quality"] / n,
        "not_searched_rate": sum(failures.values()) / n,
        "rank": {str(k): curve[k - 1] for k in ranks},
        "rank1_ci95": list(m.wilson(hits1, len(mated))),
        "cmc": curve,
        "tpir_at_fpir": _operating_points(searches, targets),
        "calibration": _calibrations(outcomes, targets),
        "det": _det(m.det_curve(searches)),
        "score_histogram": {"edges": SCORE_EDGES.tolist(), "mated": _histogram(mate_scores),
                            "nonmated": _histogram(nonmated_top)},
        "quality": _quality(outcomes),
        "ungated": {"rank": {str(k): ungated_cmc[k - 1] for k in ranks},
                    "tpir_at_fpir": _operating_points(ungated, targets),
                    "note": "had the quality gate let every detected face through (not the deployed pipeline)"},
    }


def recommend(run: EvalRun, conditions: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The threshold to ship: the highest calibrated threshold at ``ship_fpir`` over the conditions."""
    target = run.options.ship_fpir
    per = {name: next((c["threshold"] for c in rep["calibration"] if c["target_fpir"] == target), None)
           for name, rep in conditions.items()}
    finite = {k: v for k, v in per.items() if v is not None and math.isfinite(v)}
    if not finite:
        return {"target_fpir": target, "threshold": None, "per_condition": per}
    threshold = max(finite.values())
    check = {}
    for name in conditions:
        ev = [o.search() for o in run.by_condition(name) if o.half == EVALUATION]
        check[name] = _point(m.at_threshold(ev, threshold, 1, target))
    return {"target_fpir": target, "threshold": threshold, "from_condition": max(finite, key=lambda k: finite[k]),
            "per_condition": per, "evaluation_at_threshold": check,
            "rule": "highest per-condition threshold calibrated on the calibration half at the target FPIR"}


def build_report(run: EvalRun) -> dict[str, Any]:
    opts = run.options
    conditions = {c.name: condition_report(run.by_condition(c.name), opts.ranks, opts.fpir_targets)
                  for c in opts.conditions}
    primary = ORIGINAL if ORIGINAL in conditions else next(iter(conditions))
    return {
        "report_version": REPORT_VERSION,
        "rank1": conditions[primary]["rank"]["1"],
        "primary_condition": primary,
        "command": opts.command,
        "started_at": run.started_at, "seconds": round(run.seconds, 1),
        "split": {"description": run.split.description, "seed": opts.seed, **run.split.summary()},
        "options": {"levels": list(opts.levels), "face_px": opts.face_px, "scene": list(opts.scene_size),
                    "ranks": list(opts.ranks), "fpir_targets": list(opts.fpir_targets), "ship_fpir": opts.ship_fpir},
        "system": run.system,
        "enrolment": run.enrolment,
        "conditions": conditions,
        "recommended_threshold": recommend(run, conditions),
        "timing": {name: t.to_dict() for name, t in run.times.items()},
        **({"ablation": run.ablation} if run.ablation is not None else {}),
    }


def _clean(value: Any) -> Any:
    """NaN and infinities -> None, recursively (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_report(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write report.json, report.md and the plots into ``out_dir``; return the paths written."""
    from rfr.tools.eval.markdown import render_markdown
    from rfr.tools.eval.plots import write_plots

    out_dir.mkdir(parents=True, exist_ok=True)
    clean = _clean(report)
    json_path = out_dir / "report.json"
    json_path.write_text(json.dumps(clean, indent=1, allow_nan=False) + "\n")
    plots = write_plots(clean, out_dir)
    md_path = out_dir / "report.md"
    md_path.write_text(render_markdown(clean, [p.name for p in plots]))
    logger.info("report written to %s", out_dir)
    return [json_path, md_path, *plots]
