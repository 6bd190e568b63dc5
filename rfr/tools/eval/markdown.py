"""The Markdown rendering of an evaluation report (from the JSON-ready dict of :mod:`rfr.tools.eval.report`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _pct(v: float | None, digits: int = 1) -> str:
    return "n/a" if v is None else f"{100 * v:.{digits}f}%"


def _num(v: float | None, digits: int = 4) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def _summary(report: dict[str, Any]) -> list[str]:
    ranks = report["options"]["ranks"]
    targets = report["options"]["fpir_targets"]
    header = ["condition", "probes (mated / non-mated)", "no face", "gated", *(f"rank-{k}" for k in ranks),
              *(f"TPIR @ FPIR {t:g}" for t in targets), "rank-1 without gate"]
    rows = []
    for name, c in report["conditions"].items():
        ci = c["rank1_ci95"]
        tpirs = {p["target_fpir"]: p for p in c["tpir_at_fpir"]}
        rows.append([
            name, f"{c['probes']} ({c['mated']} / {c['nonmated']})", _pct(c["detection_failure_rate"]),
            _pct(c["quality_rejection_rate"]),
            *(_pct(c["rank"][str(k)]) + (f" [{_pct(ci[0])}, {_pct(ci[1])}]" if k == 1 and ci[0] is not None else "")
              for k in ranks),
            *(_tpir_cell(tpirs.get(t)) for t in targets), _pct(c["ungated"]["rank"]["1"]),
        ])
    return _table(header, rows)


def _tpir_cell(p: dict[str, Any] | None) -> str:
    if p is None:
        return "n/a"
    cell = f"{_pct(p['tpir'])} (t={_num(p['threshold'], 3)})"
    return cell if p["resolvable"] else cell + " *"


def _calibration(report: dict[str, Any]) -> list[str]:
    header = ["condition", "target FPIR", "threshold (calibration half)", "calibration FPIR / TPIR",
              "evaluation FPIR / TPIR", "evaluation n (mated / non-mated)"]
    rows = []
    for name, c in report["conditions"].items():
        for cal in c["calibration"]:
            cp, ep = cal["calibration"], cal["evaluation"]
            flag = "" if cp["resolvable"] else " *"
            rows.append([name, f"{cal['target_fpir']:g}", _num(cal["threshold"]) + flag,
                         f"{_pct(cp['fpir'], 2)} / {_pct(cp['tpir'])}", f"{_pct(ep['fpir'], 2)} / {_pct(ep['tpir'])}",
                         f"{ep['n_mated']} / {ep['n_nonmated']}"])
    return _table(header, rows)


def _recommendation(report: dict[str, Any]) -> list[str]:
    rec = report["recommended_threshold"]
    if rec.get("threshold") is None:
        return ["No threshold could be calibrated (no non-mated probes in the calibration half)."]
    lines = [f"**Threshold to ship: {rec['threshold']:.4f}** (cosine similarity) for a target FPIR of "
             f"{rec['target_fpir']:g}: the {rec['rule']} (set by `{rec['from_condition']}`).", "",
             "At that threshold, on the evaluation half:", ""]
    rows = [[name, _pct(p["fpir"], 2), _pct(p["tpir"]), f"{p['n_mated']} / {p['n_nonmated']}"]
            for name, p in rec["evaluation_at_threshold"].items()]
    return lines + _table(["condition", "FPIR", "TPIR (rank 1)", "n (mated / non-mated)"], rows)


def _quality(report: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for key, title in (("by_face_px", "face width in pixels"),
                       ("by_sharpness", "sharpness (variance of Laplacian, crop)")):
        names = list(report["conditions"])
        bins = report["conditions"][names[0]]["quality"][key]
        labels = [f"[{_edge(b['lo'], '-inf')}, {_edge(b['hi'], 'inf')})" for b in bins]
        rows = []
        for name in names:
            cells = [f"{_pct(b['rate'], 0)} ({b['n']}, {b['gated']} gated)" if b["n"] else "-"
                     for b in report["conditions"][name]["quality"][key]]
            rows.append([name, *cells])
        lines += [f"Rank-1 by {title} (probes, and how many of them the quality gate rejects):", "",
                  *_table(["condition", *labels], rows), ""]
    return lines


def _edge(v: float | None, unbounded: str) -> str:
    return unbounded if v is None else f"{v:g}"


def _timing(report: dict[str, Any]) -> list[str]:
    rows = [[name, str(t["stills"]), _num(t["ms_per_still"], 1), _num(t["stills_per_s"], 1),
             *(_num(1000 * t[f"{s}_s"] / max(1, t["stills"]), 1) for s in ("decode", "detect", "embed", "search"))]
            for name, t in report["timing"].items()]
    header = ["condition", "stills", "ms / still", "stills / s", "decode ms", "detect ms", "embed ms", "search ms"]
    return _table(header, rows)


def _conditions(opts: dict[str, Any]) -> str:
    text = "Conditions: `original` = the probe photos as they are"
    for lv in opts["levels"]:
        text += (f"; `{lv}` = a synthetic {opts['scene'][0]}x{opts['scene'][1]} scene with the face "
                 f"{opts['face_px']:g} px wide, `{lv}` degradation (rfr/tools/degrade.py)")
    if opts["levels"]:
        text += (". Scenes are seeded per probe; the face is framed from the reference detector's (MediaPipe Tasks) "
                 "detection in the original photo, whichever detector is measured, and pasted on one of a seeded pool "
                 "of scene textures")
    return text + "."


def _ablation(report: dict[str, Any]) -> list[str]:
    if "ablation" not in report:
        return []
    from rfr.tools.eval.ablation_report import render_ablation

    return [*render_ablation(report["ablation"]), "## Today's defaults in detail", ""]


def render_markdown(report: dict[str, Any], plots: Sequence[str]) -> str:
    split, system, enrol = report["split"], report["system"], report["enrolment"]
    opts = report["options"]
    lines = [
        "# RFR identification evaluation", "",
        "Candidate lists are for trained human review; a candidate is never an identification.", "",
        "Produced by:", "", "```", report["command"] or "(command not recorded)", "```", "",
        f"Run {report['started_at']}, {report['seconds']:.0f} s. Split: {split['description']}.", "",
        f"Gallery: {split['gallery_images']} images of {split['gallery_identities']} identities; "
        f"{enrol.get('enrolled')} enrolled ({enrol.get('rejected')} rejected: {enrol.get('rejected_by_reason')}). "
        f"Probes: {split['mated_probes']} mated, {split['nonmated_probes']} non-mated "
        f"({split['nonmated_identities']} identities not in the gallery); calibration half "
        f"{split['calibration_probes']}, evaluation half {split['evaluation_probes']}.", "",
        _conditions(opts), "",
        f"System: {system.get('embedder')} ({system.get('embed_runtime')}), {system.get('detector')}, "
        f"gallery {system.get('gallery')} ({system.get('milvus_index')}), {system.get('cpus')} CPUs "
        f"(load average {system.get('loadavg_at_start')} at start, {system.get('loadavg_at_end')} at end).", "",
        f"## Headline: rank-1 = {_pct(report['rank1'])} ({report['primary_condition']})", "",
        *_ablation(report),
        *_summary(report), "",
        "Rank-1 with its 95 % Wilson interval. TPIR at FPIR: in-sample (threshold chosen on the same probes); "
        "`*` = fewer non-mated searches than 1/FPIR, so that FPIR is not resolved.", "",
        "## Threshold calibration (calibration half -> evaluation half)", "",
        *_recommendation(report), "", *_calibration(report), "",
        "## Breakdown by probe quality", "",
        "Every mated probe with a detected face, searched whether or not the quality gate let it through (the "
        "deployed pipeline searches only those it lets through): where accuracy falls off, and what the gate "
        "keeps out.", "", *_quality(report),
        "## Speed of the in-process pipeline (this machine)", "", *_timing(report), "",
        "## Plots", "", *(f"![{p}]({p})" for p in plots), "",
        "## Definitions", "",
        "- A search returns one candidate per gallery subject (best score over its photos), best first.",
        "- Probes whose image was refused or in which no face passed the quality gate are not searched: "
        "a miss when mated, no false alarm when non-mated (NIST FRVT convention). `no face` / `gated` give "
        "those rates; `rank-1 without gate` searches the gated faces too.",
        "- TPIR(T): mated searches with the mate at rank 1 scoring >= T. FPIR(T): non-mated searches whose best "
        "candidate scores >= T. FNIR = 1 - TPIR.",
        "- Probe identities are split in two halves by a seeded hash of the name; thresholds are chosen on the "
        "calibration half and reported on the evaluation half.", "",
    ]
    return "\n".join(lines)
