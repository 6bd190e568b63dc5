"""The ablation's tables: each lever alone and all together, fused templates, and the threshold policy.

Input: per embedder variant, the embeddings of one run's crops (:func:`rfr.tools.eval.ablation.embed_all`).
Output: a JSON-ready dict (``report["ablation"]``) and its Markdown (:func:`render_ablation`).
Rates: rank-1 over every mated probe; TPIR at the target FPIR with the threshold calibrated on the calibration
half and measured on the evaluation half (FPIR measured there too); faces/s = probe faces embedded (and
normalised) per second on this machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from rfr.gallery import openset as m
from rfr.gallery.scoring import ThresholdTable
from rfr.tools.degrade import LEVELS
from rfr.tools.eval import levers as lv
from rfr.tools.eval.splits import CALIBRATION, EVALUATION

if TYPE_CHECKING:
    from rfr.tools.eval.runner import EvalOptions

NONE = lv.SCORE_VARIANTS[0]
COHORTS = lv.SCORE_VARIANTS[1:]
POLICY_FRACTION = 0.25  # the gallery a fixed threshold was calibrated at, as a share of the run's gallery
TABLE_MIN_COUNT = 5  # impostor scores above the table's strictest threshold (~0.9 M comparisons at this scale)


def _row(name: str, emb: dict[str, Any], variant: lv.ScoreVariant, target: float, top_k: int) -> dict[str, Any]:
    conditions, norm_s = {}, 0.0
    for cond, probes in emb["probes"].items():
        scored = lv.score(probes, emb["gallery"], variant, emb["cohorts"], top_k)
        norm_s += scored.norm_seconds
        conditions[cond] = lv.metrics(scored.searches, probes.halves, target)
    faces_per_s = emb["probe_faces"] / max(1e-9, emb["probe_seconds"] + norm_s)
    return {"lever": name, "embedder": emb["model_id"], "score_norm": variant.name, "conditions": conditions,
            "faces_per_s": round(faces_per_s, 1), "normalise_ms_per_face": round(1000 * norm_s / max(
                1, emb["probe_faces"]), 3)}


def _template_rows(emb: dict[str, Any], extra_ids: frozenset[str], target: float, top_k: int) -> list[dict[str, Any]]:
    """Subjects with a second gallery photo: one photo vs two (best photo) vs two fused, on their other probes."""
    two: lv.GalleryVectors = emb["gallery_two"]
    multi = {s for s, r in zip(two.subjects, two.rows, strict=True) if len(r) > 1}
    rows = []
    for label, gallery, mode in (("one photo per subject", emb["gallery"], "max"),
                                 ("two photos, best photo (today)", two, "max"),
                                 ("two photos, fused template (mean)", two, "mean")):
        conditions = {}
        for cond, probes in emb["probes"].items():
            keep = [i for i in range(len(probes.subjects)) if not probes.mated[i] or (
                probes.subjects[i] in multi and probes.sample_ids[i] not in extra_ids)]
            subset = lv.subset_probes(probes, keep)
            scored = lv.score(subset, gallery, NONE, lv.Cohorts(), top_k, mode)  # type: ignore[arg-type]
            conditions[cond] = lv.metrics(scored.searches, subset.halves, target) | {
                "n_mated": sum(subset.mated)}
        rows.append({"gallery": label, "subjects_with_two": len(multi), "conditions": conditions})
    return rows


def _policy_rows(emb: dict[str, Any], variant: lv.ScoreVariant, target: float, seed: int) -> dict[str, Any]:
    """A threshold calibrated when the gallery was a quarter of its size, applied at full size: fixed vs
    ``gallery_size`` (the threshold for the full template count from the calibration half's per-comparison
    impostor scores, as ``rfr calibrate --table-out`` gives the match service)."""
    full: lv.GalleryVectors = emb["gallery"]
    rng = np.random.default_rng(seed)
    small = lv.subset_gallery(full, sorted(rng.choice(len(full.subjects), round(len(full.subjects) * POLICY_FRACTION),
                                                      replace=False).tolist()))
    out: dict[str, Any] = {"score_norm": variant.name, "small_templates": small.templates,
                           "full_templates": full.templates, "conditions": {}}
    for cond, probes in emb["probes"].items():
        strangers = lv.subset_probes(probes, [i for i in range(len(probes.subjects))
                                              if not probes.mated[i] and probes.halves[i] == CALIBRATION])
        cohorts: lv.Cohorts = emb["cohorts"]
        small_tops = [m.top_score(s) for s in lv.score(strangers, small, variant, cohorts, 1).searches]
        fixed = m.threshold_for_fpir(small_tops, target)
        impostor = lv.impostor_comparisons(probes, full, variant, cohorts)  # calibration-half probes against
        # every template not their mate's: the per-comparison sample
        try:
            table = ThresholdTable.from_impostor(impostor, "eval", variant.norm, min_count=TABLE_MIN_COUNT)
            by_size: float | None = table.threshold_for(target, full.templates)
        except ValueError:  # too few impostor comparisons for that false-match rate (a tiny run)
            by_size = None
        ev_idx = [i for i, h in enumerate(probes.halves) if h == EVALUATION]
        ev = lv.subset_probes(probes, ev_idx)
        found = lv.score(ev, full, variant, cohorts, 1).searches
        cal_full = m.threshold_for_fpir(
            [m.top_score(s) for s in lv.score(strangers, full, variant, cohorts, 1).searches], target)
        points = {"fixed (calibrated at the small gallery)": fixed,
                  "gallery_size (per-comparison table, calibration half)": by_size,
                  "recalibrated at full size (reference)": cal_full}
        out["conditions"][cond] = {k: _point(m.at_threshold(found, t, 1, target)) if t is not None else None
                                   for k, t in points.items()}
    return out


def _point(p: m.OperatingPoint) -> dict[str, Any]:
    return {"threshold": round(p.threshold, 4), "fpir": p.fpir, "tpir": p.tpir, "n_nonmated": p.n_nonmated}


def _best(rows: dict[lv.ScoreVariant, dict[str, Any]], *variants: lv.ScoreVariant) -> lv.ScoreVariant:
    """Of ``variants`` (scored in ``rows``), the one with the best mean TPIR on the CALIBRATION half (never chosen on
    the evaluation half)."""
    return max(variants, key=lambda v: float(np.mean([c["cal_tpir"] for c in rows[v]["conditions"].values()])))


def hub_condition(conditions: Sequence[str]) -> str:
    """The condition whose strangers make the hubness cohort: the most degraded level of the run (the order of
    rfr.tools.degrade.LEVELS, whatever order --degrade named them in); ``original`` when the run made no scenes."""
    return max(conditions, key=lambda c: list(LEVELS).index(c) if c in LEVELS else -1)


def cohorts_of(emb: dict[str, Any], cohort_ids: Sequence[str]) -> lv.Cohorts:
    """One embedder's cohorts: T-norm's is the calibration half's strangers' original photos; hubness's is the
    same strangers' probes in :func:`hub_condition`, the faces that CCTV probes look like."""
    probes: lv.ProbeSet = emb["probes"][hub_condition(list(emb["probes"]))]
    keep = [i for i in range(len(probes.subjects))
            if not probes.mated[i] and probes.halves[i] == CALIBRATION and probes.searched[i]]
    return lv.Cohorts(emb["cohort"], tuple(cohort_ids), probes.vectors[keep],
                      tuple(probes.identities[i] for i in keep))


def evaluate_levers(embedded: dict[str, dict[str, Any]], extra_ids: frozenset[str], cohort_ids: Sequence[str],
                    options: EvalOptions) -> dict[str, Any]:
    target, top_k = options.ship_fpir, max(options.ranks)
    for emb in embedded.values():
        emb["cohorts"] = cohorts_of(emb, cohort_ids)
    today = embedded["today"]
    rows = [_row("today's defaults", today, NONE, target, top_k)]
    rows += [_row(name, emb, NONE, target, top_k) for name, emb in embedded.items() if name != "today"]
    hub_faces = len(today["cohorts"].hub_ids)
    ks = [v for v in lv.HUBNESS_VARIANTS if 2 * v.top <= hub_faces]  # a tiny run's cohort is too small for k
    scored = {v: _row(f"score_norm {v.name}", today, v, target, top_k) for v in (*COHORTS, *ks)}
    rows += [scored[v] for v in COHORTS]
    hub = _best(scored, *ks) if ks else None
    if hub is not None:
        rows.append(scored[hub])
    cohort = _best(scored, *COHORTS)
    best = cohort if hub is None else _best(scored, cohort, hub)
    last = list(embedded)[-1]
    rows.append(_row(f"all together ({last} + {best.name})", embedded[last], best, target, top_k))
    return {
        "target_fpir": target, "rows": rows, "best_cohort": cohort.name,
        "best_hubness": None if hub is None else hub.name, "best_score_norm": best.name,
        "hubness_k_tried": [v.top for v in ks], "cohort_identities": len(cohort_ids),
        "hub_cohort_faces": hub_faces, "hub_cohort_condition": hub_condition(list(today["probes"])),
        "templates": {name: _template_rows(embedded[name], extra_ids, target, top_k)
                      for name in dict.fromkeys(["today", last])},
        "policy": [_policy_rows(today, v, target, options.seed) for v in (NONE, cohort, hub) if v is not None],
        "embedders": {name: emb["model_id"] for name, emb in embedded.items()},
    }


def _hub_cohort(ab: dict[str, Any]) -> str:
    return f"the same strangers' {ab['hub_cohort_faces']} probe faces in the `{ab['hub_cohort_condition']}` condition"


def _ks(ab: dict[str, Any]) -> str:
    return "/".join(str(k) for k in ab["hubness_k_tried"]) or "none (fewer than 2k cohort faces for k = 5)"


def _pct(v: float | None) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{100 * v:.1f}%"


def _points(delta: float) -> str:
    return f"{100 * delta:+.1f} pt"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def _policy_cell(p: dict[str, Any] | None) -> str:
    return "n/a (too few comparisons)" if p is None else f"{_pct(p['fpir'])} / {_pct(p['tpir'])} ({p['threshold']:g})"


def render_ablation(ab: dict[str, Any]) -> list[str]:
    conds = list(ab["rows"][0]["conditions"])
    t = f"{ab['target_fpir']:g}"
    header = ["lever", *(f"rank-1 {c}" for c in conds), *(f"TPIR@FPIR {t} {c} (FPIR)" for c in conds),
              f"vs today: rank-1 / TPIR {conds[-1]}", "faces/s"]
    base = ab["rows"][0]["conditions"][conds[-1]]
    rows = [[r["lever"], *(_pct(r["conditions"][c]["rank1"]) for c in conds),
             *(f"{_pct(r['conditions'][c]['tpir'])} ({_pct(r['conditions'][c]['fpir'])})" for c in conds),
             f"{_points(r['conditions'][conds[-1]]['rank1'] - base['rank1'])} / "
             f"{_points(r['conditions'][conds[-1]]['tpir'] - base['tpir'])}",
             f"{r['faces_per_s']:g}"] for r in ab["rows"]]
    lines = ["## Ablation: each lever alone and all together (issue #17)", "",
             "Same crops for every row (each probe detected once per condition). Rank-1 over every mated probe; "
             f"TPIR at FPIR {t}: threshold calibrated on the calibration half, TPIR and FPIR measured on the "
             "evaluation half. faces/s: probe faces embedded (and normalised) per second on this machine. "
             f"Cohort: the {ab['cohort_identities']} non-enrolled identities of the calibration half (original "
             "photos), each probe's own identity left out. Hubness (CSLS, rfr/gallery/scoring.py): each template's "
             f"mean top-k cosine against {_hub_cohort(ab)}, each probe's own identity left out; k "
             f"{_ks(ab)} tried, the row shows the one best on the calibration half. `all together` uses the score "
             f"variant that did best on the calibration half ({ab['best_score_norm']}).", "",
             *_table(header, rows), ""]
    for name, trows in ab["templates"].items():
        header = ["gallery (embedder: " + name + ")", *(f"rank-1 {c}" for c in conds),
                  *(f"TPIR@FPIR {t} {c}" for c in conds), "mated probes"]
        lines += [f"Gallery templates, subjects with a second gallery photo ({trows[0]['subjects_with_two']}; their "
                  "first probe photo enrolled as the second) probed with their other photos, all strangers:", "",
                  *_table(header, [[r["gallery"], *(_pct(r["conditions"][c]["rank1"]) for c in conds),
                                    *(_pct(r["conditions"][c]["tpir"]) for c in conds),
                                    str(r["conditions"][conds[0]]["n_mated"])] for r in trows]), ""]
    for pol in ab["policy"]:
        kinds = list(pol["conditions"][conds[0]])
        header = ["threshold (score_norm " + pol["score_norm"] + ")",
                  *(f"{c}: FPIR / TPIR (t)" for c in conds)]
        rows = [[k, *(_policy_cell(pol["conditions"][c][k]) for c in conds)] for k in kinds]
        lines += [f"Threshold policy: calibrated when the gallery held {pol['small_templates']} templates, used at "
                  f"{pol['full_templates']} (evaluation half, target FPIR {t}):", "", *_table(header, rows), ""]
    return lines
