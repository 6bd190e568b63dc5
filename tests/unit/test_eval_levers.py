"""The ablation's arithmetic (rfr/tools/eval/levers.py) and the eval split's training exclusion (splits.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rfr.gallery.base import normalise
from rfr.gallery.openset import mate_rank
from rfr.tools.eval import levers as lv
from rfr.tools.eval.splits import LabelledPlan, from_labelled

JPEG_HEAD = b"\xff\xd8\xff\xe0" + bytes(60)  # sniffed as a JPEG by content


def probe_set(vectors: np.ndarray, subjects: list[str], searched: list[bool] | None = None) -> lv.ProbeSet:
    n = len(subjects)
    return lv.ProbeSet(normalise(vectors), tuple(subjects), tuple(s.startswith("s") for s in subjects),
                       tuple("calibration" if i % 2 else "evaluation" for i in range(n)),
                       tuple(searched or [True] * n), tuple(subjects),
                       tuple(f"{s}/{i}" for i, s in enumerate(subjects)))


def test_best_photo_and_fused_template_score_differently() -> None:
    a1, a2, b = np.eye(4, dtype=np.float32)[:3]
    gallery = lv.GalleryVectors(("sA", "sB"), (np.stack([a1, a2]), b[None, :]))
    probe = normalise(a1 + 0.1 * a2)
    best = lv.subject_scores(probe, gallery, "max")
    fused = lv.subject_scores(probe, gallery, "mean")
    assert best.shape == fused.shape == (1, 2)
    assert best[0, 0] == np.max(probe @ np.stack([a1, a2]).T)
    assert fused[0, 0] < best[0, 0] and best[0, 1] == fused[0, 1]
    assert gallery.templates == 3


def test_cohort_normalisation_never_reorders_a_list_and_leaves_own_identity_out() -> None:
    rng = np.random.default_rng(0)
    gallery = lv.GalleryVectors(tuple(f"s{i}" for i in range(8)), tuple(normalise(rng.normal(size=(1, 16)))
                                                                       for _ in range(8)))
    probes = probe_set(rng.normal(size=(6, 16)), ["s0", "s1", "s2", "x1", "x2", "x3"])
    cohort = normalise(rng.normal(size=(10, 16)))
    cohort[0] = probes.vectors[3]  # stranger x1's own photo in the cohort: it must not count for x1
    ids = ["x1", *(f"c{i}" for i in range(9))]
    plain = lv.score(probes, gallery, lv.SCORE_VARIANTS[0], lv.Cohorts(), 5)
    normed = lv.score(probes, gallery, lv.SCORE_VARIANTS[1], lv.Cohorts(cohort, tuple(ids)), 5)
    assert [[c[0] for c in s.candidates] for s in plain.searches] == [[c[0] for c in s.candidates]
                                                                       for s in normed.searches]
    assert [mate_rank(s) for s in plain.searches] == [mate_rank(s) for s in normed.searches]
    z = lv.normalised(probes, lv.subject_scores(probes.vectors, gallery), lv.SCORE_VARIANTS[1],
                     lv.Cohorts(cohort, tuple(ids)))
    z_kept = lv.normalised(probes, lv.subject_scores(probes.vectors, gallery), lv.SCORE_VARIANTS[1],
                           lv.Cohorts(cohort, ("y", *ids[1:])))
    assert z[3, 0] > z_kept[3, 0]  # with its own photo left out, x1's cohort mean is lower, its z higher


def test_a_probe_not_searched_has_no_candidates_and_metrics_use_both_halves() -> None:
    rng = np.random.default_rng(1)
    rows = tuple(normalise(rng.normal(size=(1, 16))) for _ in range(4))
    gallery = lv.GalleryVectors(("s0", "s1", "s2", "s3"), rows)
    vectors = np.vstack([rows[0], rows[1], rng.normal(size=(200, 16))])
    subjects = ["s0", "s1", *(f"x{i}" for i in range(200))]
    probes = probe_set(vectors, subjects, [True, False, *([True] * 200)])
    found = lv.score(probes, gallery, lv.SCORE_VARIANTS[0], lv.Cohorts(), 3).searches
    assert found[1].candidates == () and mate_rank(found[0]) == 1
    result = lv.metrics(found, probes.halves, 0.01)
    assert result["rank1"] == 0.5
    assert result["n_nonmated_eval"] + sum(1 for s, h in zip(found, probes.halves, strict=True)
                                           if not s.mated and h == "calibration") == 200


def test_labelled_split_leaves_training_identities_out_and_takes_strangers_from_singles(tmp_path: Path) -> None:
    counts = {"Big": 5, "Pair1": 2, "Pair2": 2, "Trio": 3, **{f"Single{i}": 1 for i in range(6)}}
    for name, n in counts.items():
        (tmp_path / name).mkdir()
        for i in range(n):
            (tmp_path / name / f"{name}_{i:04d}.jpg").write_bytes(JPEG_HEAD)
    plan = LabelledPlan(None, 4, 2, 2, 0, "singles", frozenset({"Big"}))
    split = from_labelled(tmp_path, plan)
    every = {s.identity for s in split.gallery} | {p.sample.identity for p in split.probes}
    assert "Big" not in every
    strangers = {p.sample.identity for p in split.probes if not p.mated}
    assert len(strangers) == 4 and all(counts[s] == 1 for s in strangers)
    assert {"Pair1", "Pair2", "Trio"} <= split.gallery_identities
    assert len(split.gallery_identities) == 5  # three mated + two single-image distractors
    assert not split.gallery_identities & strangers
    assert "1 training identities left out" in split.description


def _embedded(seed: int = 0) -> dict[str, object]:
    """A fake embedder variant's output: 40 subjects (10 with a second photo), mated and stranger probes."""
    rng = np.random.default_rng(seed)
    centres = normalise(rng.normal(size=(40, 16)))
    subjects = tuple(f"s{i}" for i in range(40))

    def near(i: int) -> np.ndarray:
        out: np.ndarray = normalise(centres[i] + 0.5 * rng.normal(size=16))
        return out

    one = lv.GalleryVectors(subjects, tuple(near(i) for i in range(40)))
    two = lv.GalleryVectors(subjects, tuple(np.vstack([r, near(i)]) if i < 10 else r
                                            for i, r in enumerate(one.rows)))
    names = [f"s{i % 40}" for i in range(60)] + [f"x{i}" for i in range(300)]
    vectors = np.vstack([np.vstack([near(i % 40) for i in range(60)]), rng.normal(size=(300, 16))])
    probes = probe_set(vectors, names)
    return {"model_id": "m", "gallery": one, "gallery_two": two, "cohort": normalise(rng.normal(size=(50, 16))),
            "probes": {"original": probes, "mild": probes}, "probe_seconds": 1.0, "probe_faces": 720}


def test_evaluate_levers_builds_every_table() -> None:
    from rfr.tools.eval.ablation_report import evaluate_levers, render_ablation
    from rfr.tools.eval.runner import EvalOptions

    ab = evaluate_levers({"today": _embedded()}, frozenset(), [f"c{i}" for i in range(50)],
                         EvalOptions(levels=("mild",), ship_fpir=0.05))
    levers = [r["lever"] for r in ab["rows"]]
    assert levers[0] == "today's defaults" and levers[-1] == f"all together (today + {ab['best_score_norm']})"
    assert ab["best_hubness"] in {v.name for v in lv.HUBNESS_VARIANTS} and ab["hub_cohort_faces"] == 150
    assert f"score_norm {ab['best_hubness']}" in levers
    assert all(r["conditions"]["original"]["rank1"] == ab["rows"][0]["conditions"]["original"]["rank1"]
               for r in ab["rows"] if "cohort (" in r["lever"])  # T-norm never changes rank-1
    one, _, fused = ab["templates"]["today"]
    assert one["subjects_with_two"] == 10 and one["conditions"]["original"]["n_mated"] == 60 // 40 * 10 + 10
    assert {"rank1", "tpir", "fpir"} <= set(fused["conditions"]["mild"])
    assert [p["score_norm"] for p in ab["policy"]] == ["none", ab["best_cohort"], ab["best_hubness"]]
    assert ab["best_score_norm"] in {ab["best_cohort"], ab["best_hubness"]}
    policy = ab["policy"][0]["conditions"]["original"]
    assert set(policy) == {"fixed (calibrated at the small gallery)",
                           "gallery_size (per-comparison table, calibration half)",
                           "recalibrated at full size (reference)"}
    text = "\n".join(render_ablation(ab))
    assert "Hubness (CSLS" in text and "k 5/10/20 tried" in text
    assert "## Ablation" in text and "two photos, fused template (mean)" in text and "Threshold policy" in text


def test_hubness_demotes_a_template_that_every_stranger_resembles() -> None:
    """A hub (a template close to the CCTV-like cohort) wins a stranger's raw search; CSLS hands rank 1 back to
    the mate of a mated probe and lowers the stranger's top score, and the cohort leaves the probe's own identity
    out."""
    rng = np.random.default_rng(3)
    base = normalise(rng.normal(size=(1, 32)))[0]
    hub = normalise(base + 0.05 * rng.normal(size=32)).reshape(-1)
    mate = normalise(rng.normal(size=32)).reshape(-1)
    gallery = lv.GalleryVectors(("sH", "sM"), (hub.reshape(1, -1), mate.reshape(1, -1)))
    cohort = normalise(base + 0.1 * rng.normal(size=(30, 32)))  # soft faces: all near `base`
    ids = tuple(f"c{i}" for i in range(30))
    probe = normalise(0.4 * mate + 0.6 * base)  # the mate, soft: drifts toward the hub
    j = int(np.argmax(cohort @ hub))  # the stranger x0: the cohort face most like the hub
    probes = probe_set(np.vstack([probe.reshape(1, -1), cohort[j:j + 1]]), ["sM", "x0"])
    plain = lv.score(probes, gallery, lv.SCORE_VARIANTS[0], lv.Cohorts(), 2).searches
    csls = lv.score(probes, gallery, lv.HUBNESS_VARIANTS[0], lv.Cohorts(hub=cohort, hub_ids=ids), 2).searches
    assert plain[0].candidates[0][0] == "sH" and csls[0].candidates[0][0] == "sM"
    own = lv.score(probes, gallery, lv.HUBNESS_VARIANTS[0], lv.Cohorts(hub=cohort, hub_ids=tuple(
        "x0" if i == j else c for i, c in enumerate(ids))), 2)
    assert dict(own.searches[1].candidates)["sH"] > dict(csls[1].candidates)["sH"]  # x0's own face left out of
    # the hub's top 5: the hub's hubness for x0 is lower, so x0's CSLS score against it is higher


def test_hubness_cohort_comes_from_the_most_degraded_condition_whatever_the_order() -> None:
    from rfr.tools.eval.ablation_report import hub_condition

    assert hub_condition(["original", "mild", "clean"]) == "mild"
    assert hub_condition(["original", "clean", "hard", "mild"]) == "hard"
    assert hub_condition(["original"]) == "original"
