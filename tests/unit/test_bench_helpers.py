"""The benchmark helpers that decide what is measured: probe choice, old-vs-new ratios, recall comparison."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks.bench_detect import speedups
from benchmarks.run import parse_json_output, pipeline_ratios
from rfr.tools.eval.stackbench import pick_people


def _faces(root: Path, people: dict[str, int]) -> Path:
    for name, n in people.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            (root / name / f"{name}_{i:04d}.jpg").write_bytes(b"\xff\xd8\xff" + bytes([i]))
    return root


def test_pick_people_skips_identities_whose_photos_the_gate_would_refuse(tmp_path: Path) -> None:
    root = _faces(tmp_path, {"a": 2, "b": 3, "c": 2, "d": 1, "e": 2})
    everyone = pick_people(root, 10, 0)
    assert sorted(name for name, _, _ in everyone) == ["a", "b", "c", "e"]  # two photos or more
    turned = {root / "c" / "c_0001.jpg"}  # a probe photo the detect stage would not search
    chosen = pick_people(root, 3, 0, usable=lambda p: p not in turned)
    assert sorted(name for name, _, _ in chosen) == ["a", "b", "e"]


def test_pipeline_ratio_against_the_first_detector() -> None:
    runs: dict[str, dict[str, Any]] = {"mediapipe": {"result": {"throughput": {"stills_per_s": 4.0}}},
            "litert": {"result": {"throughput": {"stills_per_s": 10.0}}},
            "torch": {"error": "no CUDA"}}
    assert pipeline_ratios(runs) == {"mediapipe_vs_mediapipe": 1.0, "litert_vs_mediapipe": 2.5}


def test_speedup_compares_recall_from_the_minimum_face_width_and_reports_below_it() -> None:
    def row(detector: str, ms: float, recall: dict[str, float]) -> dict[str, object]:
        return {"scene": "1920x1080", "detector": detector, "strategy": "auto", "ms_median": ms, "recall": recall}

    results = [row("mediapipe", 100.0, {"24": 0.8, "32": 1.0, "48": 0.9}),
               row("litert", 25.0, {"24": 0.7, "32": 1.0, "48": 0.9})]
    new = speedups(results, "mediapipe:auto", 32)[1]
    assert new["speedup_vs_mediapipe:auto"] == 4.0
    assert new["recall_at_least_baseline_from_32px"] is True
    assert new["below_baseline_under_min_face"] == {"24": [0.7, 0.8]}
    worse = speedups([results[0], row("litert", 25.0, {"24": 0.8, "32": 0.97, "48": 0.9})], "mediapipe:auto", 32)
    assert worse[1]["recall_at_least_baseline_from_32px"] is False


def test_parse_json_output_takes_the_last_object() -> None:
    assert parse_json_output('log line\n{"a": 1}\n') == {"a": 1}


def test_paired_detector_comparison_counts_discordant_probes_and_pools_seeds() -> None:
    from benchmarks.eval_detectors import mcnemar_p, paired, pooled

    assert mcnemar_p(0, 0) == 1.0 and mcnemar_p(5, 5) == 1.0
    assert mcnemar_p(0, 6) == pytest.approx(2 / 64) and mcnemar_p(6, 0) == mcnemar_p(0, 6)
    first = {("a", "mild"): True, ("b", "mild"): True, ("c", "mild"): False, ("d", "mild"): False}
    second = {("a", "mild"): True, ("b", "mild"): False, ("c", "mild"): True, ("d", "mild"): True, ("e", "mild"): True}
    out = paired(first, second)  # "e" is in one run only: not compared
    assert (out["probes"], out["first_hits"], out["second_hits"]) == (4, 2, 3)
    assert (out["first_only"], out["second_only"], out["rank1_difference"]) == (1, 2, 0.25)
    low, high = out["difference_ci95"]
    assert low < 0.25 < high
    with pytest.raises(ValueError):
        paired(first, {("z", "mild"): True})
    runs = {seed: [{(s, c): hit for (s, _), hit in first.items() for c in ("original", "clean", "mild")},
                   {(s, c): hit for (s, _), hit in second.items() for c in ("original", "clean", "mild")}]
            for seed in (0, 1)}
    both = pooled(runs)  # the same probe ids in two seeds count twice probe by probe, once photo by photo
    assert both["clean"]["probes"] == 8 and both["clean"]["second_only"] == 4
    photos = both["clean"]["by_photo"]
    assert (photos["photos"], photos["photos_better"], photos["photos_worse"]) == (4, 2, 1)
    assert photos["sign_test_p"] == 1.0
    low, high = photos["difference_ci95_photo_bootstrap"]
    assert low <= 0.25 <= high


def test_by_photo_counts_a_photo_once_however_many_seeds_drew_it() -> None:
    from benchmarks.eval_detectors import by_photo, pairs

    first = {(f"{seed}:p{i}", "mild"): False for seed in range(5) for i in range(6)}
    second = {k: k[0].endswith(("p0", "p1", "p2", "p3", "p4", "p5")) for k in first}
    out = by_photo(first, second)
    assert (out["photos"], out["photos_better"], out["photos_worse"]) == (6, 6, 0)
    assert out["sign_test_p"] == round(2 / 64, 4)  # six photos, not thirty probes
    assert out["difference_ci95_photo_bootstrap"] == [1.0, 1.0]
    rows = pairs({0: [{("b", "mild"): False, ("a", "mild"): True}, {("a", "mild"): False, ("b", "mild"): True}]})
    assert rows == {"original": {"0": ""}, "clean": {"0": ""}, "mild": {"0": "a=10 b=01"}}


def test_score_norm_variants_leave_the_probes_own_identity_out_and_only_the_gallery_side_reorders() -> None:
    import numpy as np

    from benchmarks.eval_score_norms import probe_hubness, scorers
    from rfr.gallery.base import normalise
    from rfr.gallery.scoring import template_hubness
    from rfr.tools.eval import levers as lv

    rng = np.random.default_rng(0)
    probes = lv.ProbeSet(normalise(rng.normal(size=(4, 8))), ("p0", "p1", "p2", "p3"), (True,) * 4,
                         ("calibration",) * 4, (True,) * 4, ("a", "b", "c", "d"), ("s0", "s1", "s2", "s3"))
    cohort = normalise(rng.normal(size=(6, 8)))
    own = cohort.copy()
    own[0] = probes.vectors[0]  # probe 0's own face in the cohort: left out, so it cannot set its r_p
    cohorts = lv.Cohorts(hub=own, hub_ids=("a", "x", "y", "z", "u", "v"))
    r_p = probe_hubness(probes, cohorts, 2)
    assert r_p[0] == pytest.approx(np.sort(own[1:] @ probes.vectors[0])[-2:].mean())
    templates = normalise(rng.normal(size=(5, 8)))
    raw = (probes.vectors @ templates.T).astype(np.float64)
    every = scorers()
    probe_side = every["probe k 5"](probes, templates, raw, cohorts)
    assert (np.argsort(-probe_side, axis=1) == np.argsort(-raw, axis=1)).all()  # a shift per probe: same order
    gallery = every["gallery k 5"](probes, templates, raw, cohorts)
    r_g = template_hubness(templates, own, 5, np.asarray(probes.identities)[:, None] == np.asarray(cohorts.hub_ids))
    assert gallery == pytest.approx(2 * raw - r_g)
    assert every["both k 5"](probes, templates, raw, cohorts) == pytest.approx(gallery - probe_hubness(
        probes, cohorts, 5)[:, None])
