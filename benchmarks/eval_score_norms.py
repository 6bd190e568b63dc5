"""Which side of a comparison to correct for hubness: gallery, probe, both, or T-norm against CCTV-like faces.

    .venv/bin/python -m benchmarks.eval_score_norms --crops-cache FILE [--embedder today] [--out FILE]

Reads the faces an ``rfr eval --ablation --crops-cache FILE`` run found (the command of docs/eval/report.md; the
crops are a pickle that command wrote on this machine: never point this at a file from elsewhere), embeds them
with one embedder variant of the ablation, and scores the same searches several ways against the ablation's
CCTV-like cohort (the calibration half's strangers as ``mild`` probes, each probe's own identity left out):

* ``gallery k``: CSLS as ``match.score_norm=hubness`` does it, ``2 s - r_g`` (:mod:`rfr.gallery.hubness`);
* ``probe k``: ``s - r_p``, ``r_p`` the probe's mean cosine to its k nearest cohort faces (a per-probe shift: the
  order of a list never changes, only which lists pass);
* ``both k``: full CSLS, ``2 s - r_g - r_p``;
* ``tnorm-cctv top``: T-norm against the same CCTV-like cohort (the ablation's T-norm uses original photos).

Rank-1 over every mated probe; TPIR at FPIR 1 %: threshold on the calibration half, TPIR and FPIR on the
evaluation half, ``cal_tpir`` on the calibration half (what a choice may be made on). Prints JSON.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import emit  # noqa: E402
from rfr.core.settings import load_settings  # noqa: E402
from rfr.gallery.scoring import cohort_stats, hubness_left_out, template_hubness  # noqa: E402
from rfr.tools.eval import levers as lv  # noqa: E402
from rfr.tools.eval.ablation import embed_all, embed_variants  # noqa: E402
from rfr.tools.eval.ablation_report import cohorts_of  # noqa: E402

Scores = npt.NDArray[np.float64]
Scorer = Callable[[lv.ProbeSet, lv.Vectors, Scores, lv.Cohorts], Scores]


def _left_out(probes: lv.ProbeSet, cohorts: lv.Cohorts) -> npt.NDArray[np.bool_]:
    out: npt.NDArray[np.bool_] = np.asarray(probes.identities)[:, None] == np.asarray(cohorts.hub_ids)[None, :]
    return out


def probe_hubness(probes: lv.ProbeSet, cohorts: lv.Cohorts, k: int) -> Scores:
    """``r_p`` (N,): each probe's mean cosine to its ``k`` nearest cohort faces, its own identity left out."""
    assert cohorts.hub is not None
    return hubness_left_out(probes.vectors, probes.identities, cohorts.hub, cohorts.hub_ids, k)


def gallery_hubness(probes: lv.ProbeSet, templates: lv.Vectors, cohorts: lv.Cohorts, k: int) -> Scores:
    assert cohorts.hub is not None
    return template_hubness(templates, cohorts.hub, k, _left_out(probes, cohorts))


def variant_scores(probes: lv.ProbeSet, templates: lv.Vectors, raw: Scores, cohorts: lv.Cohorts, kind: str,
                   k: int) -> Scores:
    """N x T scores of one variant (module docstring): ``kind`` none, gallery, probe, both or tnorm-cctv (``k``:
    the top cohort scores T-norm reads, 0 = all)."""
    if kind == "tnorm-cctv":
        return _tnorm(probes, raw, cohorts, k)
    out = 2 * raw if kind in ("gallery", "both") else raw
    if kind in ("gallery", "both"):
        out = out - gallery_hubness(probes, templates, cohorts, k)
    if kind in ("probe", "both"):
        out = out - probe_hubness(probes, cohorts, k)[:, None]
    return out


def scorers() -> dict[str, Scorer]:
    """Every variant by name: (probes, gallery templates, raw cosines N x T, cohorts) -> N x T scores."""
    kinds = [("none", 0)] + [(kind, k) for kind in ("gallery", "probe", "both") for k in (5, 10, 20)]
    kinds += [("tnorm-cctv", 0), ("tnorm-cctv", 50)]
    return {kind if kind == "none" else f"{kind} {'top' if kind == 'tnorm-cctv' else 'k'} {k}":
            partial(variant_scores, kind=kind, k=k) for kind, k in kinds}


def _tnorm(probes: lv.ProbeSet, raw: Scores, cohorts: lv.Cohorts, top: int) -> Scores:
    assert cohorts.hub is not None
    mean, std = cohort_stats(probes.vectors, cohorts.hub, top, _left_out(probes, cohorts))
    out: Scores = (raw - mean[:, None]) / std[:, None]
    return out


def score(embedded: dict[str, Any], cohorts: lv.Cohorts, scorer: Scorer, top_k: int) -> dict[str, Any]:
    """One variant in every condition: rank-1, TPIR / FPIR at FPIR 1 % (evaluation half) and calibration TPIR."""
    gallery: lv.GalleryVectors = embedded["gallery"]
    templates, owners = gallery.matrix("max")
    out: dict[str, Any] = {}
    for name, probes in embedded["probes"].items():
        raw = (probes.vectors @ templates.T).astype(np.float64)
        by_subject = lv._by_subject(scorer(probes, templates, raw, cohorts), owners, len(gallery.rows))
        m = lv.metrics(lv.searches(probes, by_subject, gallery.subjects, top_k), probes.halves, 0.01)
        out[name] = {k: round(float(m[k]), 4) for k in ("rank1", "tpir", "fpir", "cal_tpir", "in_sample_tpir")}
    out["mean_cal_tpir"] = round(float(np.mean([c["cal_tpir"] for c in list(out.values())])), 4)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--crops-cache", type=Path, required=True, help="written by rfr eval --ablation --crops-cache")
    p.add_argument("--embedder", default="today", help="an ablation embedder variant (today, all embedder levers)")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    settings = load_settings()
    with args.crops_cache.open("rb") as fh:
        _, crops = pickle.load(fh)  # our own cache (module docstring)
    [variant] = [v for v in embed_variants(settings) if v.name == args.embedder]
    embedded = embed_all(settings, variant, crops, settings.embed.batch_size)
    cohorts = cohorts_of(embedded, [c[0] for c in crops.cohort])
    report = {"benchmark": "eval score norms", "command": " ".join(["python -m benchmarks.eval_score_norms",
                                                                     *sys.argv[1:]]),
              "embedder": embedded["model_id"], "variant": variant.name, "cohort_faces": len(cohorts.hub_ids),
              "variants": {name: score(embedded, cohorts, f, args.top_k) for name, f in scorers().items()}}
    return emit(report, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
