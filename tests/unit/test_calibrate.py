"""Threshold calibration maths: FMR thresholds, rates, disjoint identity splits, pair scores, open-set check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rfr.core.image_files import identity_folders
from rfr.gallery.calibrate import (
    LabelledVectors,
    calibrate_folder,
    calibrate_pairs,
    open_set,
    pair_scores,
    rates,
    split_identities,
    threshold_for_fmr,
)
from rfr.gallery.faceset import read_pairs


def test_threshold_for_fmr_is_the_lowest_threshold_meeting_the_target() -> None:
    impostor = np.linspace(0.0, 0.999, 1000)
    t = threshold_for_fmr(impostor, 0.01)
    assert np.mean(impostor >= t) <= 0.01
    assert np.mean(impostor >= np.nextafter(t, -np.inf) - 1e-9) > 0.01  # any lower threshold exceeds it
    assert threshold_for_fmr(impostor, 0.0) > impostor.max()
    assert threshold_for_fmr(impostor, 1.0) == -1.0
    with pytest.raises(ValueError):
        threshold_for_fmr(np.zeros(0), 0.01)


def test_rates_at_threshold() -> None:
    r = rates(np.array([0.2, 0.6, 0.8, 0.9]), np.array([0.1, 0.3, 0.7]), 0.5)
    assert r["fmr"] == pytest.approx(1 / 3) and r["fnmr"] == 0.25 and r["tmr"] == 0.75


def test_identity_split_is_disjoint_stable_and_seeded() -> None:
    names = [f"id{i}" for i in range(101)]
    calib, evaluation = split_identities(names, 0.5, seed=3)
    assert not set(calib) & set(evaluation) and len(calib) + len(evaluation) == 101
    assert abs(len(evaluation) - 50) <= 1
    assert split_identities(list(reversed(names)), 0.5, seed=3) == (calib, evaluation)
    assert split_identities(names, 0.5, seed=4) != (calib, evaluation)


def test_pair_scores_counts_every_pair_once() -> None:
    rng = np.random.default_rng(0)
    v = rng.normal(size=(7, 4)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    labels = np.array([0, 0, 0, 1, 1, 2, 3])
    genuine, impostor = pair_scores(v, labels)
    assert len(genuine) == 3 + 1 and len(impostor) == 21 - 4
    assert genuine.max() <= 1.0 + 1e-6
    assert pytest.approx(sorted(genuine)) == sorted([float(v[a] @ v[b]) for a, b in [(0, 1), (0, 2), (1, 2), (3, 4)]])


def clustered(n_ids: int, per_id: int, noise: float, dim: int = 64, seed: int = 0) -> LabelledVectors:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_ids, dim))
    vecs = np.repeat(centres, per_id, axis=0) + rng.normal(size=(n_ids * per_id, dim)) * noise
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
    labels = np.repeat(np.arange(n_ids), per_id).astype(np.int64)
    return LabelledVectors(vecs, labels, [f"id{i}" for i in range(n_ids)], [f"p{i}" for i in range(len(labels))])


def test_calibrate_folder_reports_thresholds_and_heldout_rates() -> None:
    data = clustered(60, 4, noise=0.5)
    report = calibrate_folder(data, [1e-2, 1e-3], eval_fraction=0.5, seed=0)
    assert report["calibration"]["identities"] + report["evaluation"]["identities"] == 60
    loose, strict = report["operating_points"]
    assert loose["calibration"]["fmr"] <= 1e-2 and strict["calibration"]["fmr"] <= 1e-3
    assert strict["calibration"]["threshold"] >= loose["calibration"]["threshold"]
    assert loose["evaluation"]["tmr"] > 0.9  # well-separated synthetic identities
    assert loose["evaluation_open_set"]["rank1_at_threshold"] > 0.9


def test_open_set_on_separated_identities() -> None:
    data = clustered(20, 3, noise=0.3, seed=1)
    result = open_set(data.vectors, data.labels, threshold=0.5)
    assert result["enrolled_identities"] == 10
    assert result["rank1_at_threshold"] == 1.0 and result["no_candidate_rate_non_mated"] == 1.0
    impossible = open_set(data.vectors, data.labels, threshold=1.01)
    assert impossible["rank1_at_threshold"] == 0.0


def test_calibrate_pairs_with_an_evaluation_split() -> None:
    g, i = np.array([0.8, 0.9, 0.7]), np.linspace(-0.2, 0.5, 200)
    report = calibrate_pairs({"calibration": (g, i), "evaluation": (g - 0.1, i)}, [0.01])
    [point] = report["operating_points"]
    assert point["calibration"]["fmr"] <= 0.01 and "evaluation" in point


def test_read_pairs_and_identity_folders(tmp_path: Path) -> None:
    (tmp_path / "pairs.csv").write_text("path_a,path_b,same,split\na.jpg,b.jpg,1,evaluation\na.jpg,c.jpg,0,\n")
    pairs = read_pairs(tmp_path / "pairs.csv")
    assert [(p.a.name, p.same, p.split) for p in pairs] == [("a.jpg", True, "evaluation"),
                                                             ("a.jpg", False, "calibration")]
    jpeg, png = b"\xff\xd8\xff\xe0" + bytes(60), b"\x89PNG\r\n\x1a\n" + bytes(56)
    files = {"x/1.jpg": jpeg, "x/2.jfif": jpeg, "x/3.JPG": jpeg, "y/1.png": png, "y/fake.jpg": b"not an image",
             "z/readme.txt": b"notes", ".hidden/1.jpg": jpeg}
    for rel, data in files.items():
        (tmp_path / "faces" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "faces" / rel).write_bytes(data)
    photos = identity_folders(tmp_path / "faces")  # by content, not by name
    assert {k: [p.name for p in v] for k, v in photos.items()} == {"x": ["1.jpg", "2.jfif", "3.JPG"], "y": ["1.png"]}


def _clusters(n_ids: int, per_id: int, dim: int = 32, seed: int = 0) -> LabelledVectors:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_ids, dim))
    rows = np.repeat(centres, per_id, axis=0) + 0.6 * rng.normal(size=(n_ids * per_id, dim))
    vectors = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)
    labels = np.repeat(np.arange(n_ids), per_id).astype(np.int64)
    return LabelledVectors(vectors, labels, [f"id{i}" for i in range(n_ids)], [f"p{i}" for i in range(len(labels))])


def test_cohort_scores_gallery_size_thresholds_and_table() -> None:
    from rfr.gallery.calibrate import gallery_size_points, normalised_pair_scores, split_scores, threshold_table
    from rfr.gallery.scoring import Cohort, cohort_stats, fmr_for_fpir

    data = _clusters(60, 3)
    cohort = Cohort(_clusters(40, 1, seed=1).vectors, tuple(f"c{i}" for i in range(40)), "m")
    genuine, impostor = normalised_pair_scores(data, cohort)
    assert len(genuine) == 60 * 3 * 2 and len(impostor) == 180 * 179 - 360  # ordered pairs
    mean, std = cohort_stats(data.vectors[:1], cohort.vectors)
    z01 = (float(data.vectors[0] @ data.vectors[1]) - mean[0]) / std[0]
    assert z01 == pytest.approx(genuine[0])  # row 0 against row 1, normalised by row 0's cohort scores
    assert np.median(genuine) > np.median(impostor) + 2  # standard deviations apart, not cosines

    scores = split_scores(data, 0.5, 0, cohort)
    assert scores.score_norm == "cohort"
    at = gallery_size_points(scores, [0.5, 0.001], 10)
    easy, hard = at["points"]
    assert easy["per_comparison_fmr"] == pytest.approx(fmr_for_fpir(0.5, 10))
    assert easy["threshold"] == pytest.approx(threshold_for_fmr(scores.ci, easy["per_comparison_fmr"]), abs=1e-6)
    assert 0.0 <= easy["predicted_fpir_evaluation"] <= 1.0
    assert hard["threshold"] is None and "cannot resolve" in hard["note"]  # 1e-4 per comparison: too few pairs
    table = threshold_table(scores, "m")
    assert table.score_norm == "cohort" and table.impostor_scores == len(scores.ci)
    assert calibrate_folder(data, [0.01], scores=scores)["score_norm"] == "cohort"


def test_hubness_scores_leave_the_gallery_photos_own_identity_out_of_its_cohort() -> None:
    from rfr.gallery.calibrate import hubness_pair_scores, split_scores, threshold_table
    from rfr.gallery.scoring import Cohort, template_hubness

    data = _clusters(30, 2)
    extra = _clusters(20, 1, seed=1).vectors
    # the cohort holds the first identity's second photo as well: it must not count for that identity's photos
    rows = np.vstack([extra, data.vectors[1:2]])
    cohort = Cohort(rows, (*(f"c{i}" for i in range(20)), "id0"), "m")
    genuine, impostor = hubness_pair_scores(data, cohort, 5)
    assert len(genuine) == 30 * 2 and len(impostor) == 60 * 59 - 60  # ordered pairs
    r_1 = template_hubness(data.vectors[1:2], extra, 5)[0]  # photo 1 (id0) against the other identities only
    assert genuine[0] == pytest.approx(2 * float(data.vectors[0] @ data.vectors[1]) - r_1)  # row 0 -> photo 1
    r_2 = template_hubness(data.vectors[2:3], rows, 5)[0]  # photo 2 (id1): the whole cohort
    assert impostor[0] == pytest.approx(2 * float(data.vectors[0] @ data.vectors[2]) - r_2)
    scores = split_scores(data, 0.5, 0, cohort, hubness_k=5)
    assert scores.score_norm == "hubness" and threshold_table(scores, "m").score_norm == "hubness"
    with pytest.raises(ValueError, match="k=21"):
        hubness_pair_scores(data, cohort, 21)  # id0's photos have only 20 cohort faces of other identities
