"""`rfr cohort` on synthetic CCTV stills made by `rfr degrade` from shared faces: the deployed models, a cohort file
the cluster service's hubness correction reads (cluster.cohort_file)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from rfr.cluster.clusterer import rule_of
from rfr.core.image_files import identity_folders
from rfr.core.settings import ClusterSettings, MatchSettings
from rfr.core.topics import Topics
from rfr.gallery.memory import InMemoryGallery
from rfr.gallery.scoring import Cohort, ThresholdTable
from rfr.tools.cohort_cli import app as cohort_app  # one command: typer runs it without its name
from rfr.tools.eval.cli import app as eval_app
from rfr.tools.gallery_cli import app as gallery_app
from services.match.handler import MatchHandler


def test_cohort_of_degraded_stills_feeds_the_cluster_rule(lfw_dir: Path, tmp_path: Path) -> None:
    people = [name for name, photos in identity_folders(lfw_dir).items() if len(photos) >= 2][:5]
    photos = tmp_path / "photos"
    for name in people:  # links, not copies: the shared photos stay where they are
        (photos / name).mkdir(parents=True)
        for path in identity_folders(lfw_dir)[name][:2]:
            (photos / name / path.name).symlink_to(path)
    stills, out = tmp_path / "stills", tmp_path / "cohort.npz"
    made = CliRunner().invoke(eval_app, ["degrade", "--in", str(photos), "--out", str(stills), "--level", "mild",
                                         "--face-px", "48", "--scene", "640x480"])
    assert made.exit_code == 0, made.output
    (stills / "Nobody").mkdir()
    cv2.imwrite(str(stills / "Nobody" / "wall.png"), np.full((480, 640, 3), 128, np.uint8))  # a still without a face
    got = CliRunner().invoke(cohort_app, [str(stills), "--out", str(out), "--per-identity", "2",
                                          "--no-progress"])
    assert got.exit_code == 0, got.output
    cohort = Cohort.load(out)
    assert f"wrote a cohort of {len(cohort.vectors)} faces ({cohort.model_id})" in got.output
    assert "no_face" in got.output.split("left out: ")[1]  # the wall (and any still whose face was not found)
    assert 7 <= len(cohort.vectors) <= 10  # two stills of each of five people, the odd one without a usable face
    assert set(cohort.identities) <= set(people) and max(map(cohort.identities.count, people)) == 2
    assert np.allclose(np.linalg.norm(cohort.vectors, axis=1), 1.0, atol=1e-4)
    rule = rule_of(ClusterSettings(link_threshold=0.2, merge_threshold=0.25, hubness_k=3, cohort_file=out))
    assert rule.hubness is not None and rule.hubness.model_id == cohort.model_id
    assert -1.0 <= rule.hub(cohort.vectors[0]) <= 1.0


def test_cohort_of_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    got = CliRunner().invoke(cohort_app, [str(tmp_path / "absent"), "--out", str(tmp_path / "c.npz")])
    assert got.exit_code == 2 and "no such folder" in got.output
    assert not (tmp_path / "c.npz").exists()


def test_calibrate_states_csls_thresholds_that_the_match_service_loads(lfw_dir: Path, tmp_path: Path) -> None:
    folders = identity_folders(lfw_dir)
    multi = [name for name, photos in folders.items() if len(photos) >= 2][10:50]
    singles = [name for name, photos in folders.items() if len(photos) == 1][:12]
    for root, names, per in ((tmp_path / "faces", multi, 2), (tmp_path / "strangers", singles, 1)):
        for name in names:  # links, not copies
            (root / name).mkdir(parents=True)
            for path in folders[name][:per]:
                (root / name / path.name).symlink_to(path)
    cohort, table, report = tmp_path / "cohort.npz", tmp_path / "table.json", tmp_path / "report.json"
    got = CliRunner().invoke(gallery_app, [
        "calibrate", str(tmp_path / "faces"), "--cohort-from", str(tmp_path / "strangers"), "--cohort", str(cohort),
        "--hubness-k", "3", "--gallery-size", "10", "--target-fpir", "0.1", "--table-out", str(table),
        "--json", str(report), "--no-progress"])
    assert got.exit_code == 0, got.output
    result = json.loads(report.read_text())
    assert result["score_norm"] == "hubness" and result["at_gallery_size"]["score_norm"] == "hubness"
    assert result["calibration"]["genuine_score_median"] > result["calibration"]["impostor_score_median"] + 0.3
    stated = ThresholdTable.load(table)
    assert stated.score_norm == "hubness" and stated.model_id == Cohort.load(cohort).model_id
    settings = MatchSettings(score_norm="hubness", hubness_k=3, cohort_file=cohort, threshold_policy="gallery_size",
                             threshold_table=table, target_fpir=0.1, watch_lists=["custody"])
    handler = MatchHandler(InMemoryGallery(stated.model_id), settings, Topics("t"), None)
    assert handler.thresholds.score_norm == "hubness" and handler.hubness is not None
    point = result["at_gallery_size"]["points"][0]
    assert point["threshold"] is not None
    assert handler.thresholds.rule.base(10) == pytest.approx(point["threshold"], abs=0.02)  # the table's, at 10


def test_calibrate_refuses_hubness_it_cannot_calibrate(lfw_dir: Path, tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("a.jpg,b.jpg,1\n")
    with_pairs = ["--pairs", str(pairs), "--cohort", str(tmp_path / "c.npz"), "--hubness-k", "3"]
    for args in (["--hubness-k", "3"], with_pairs):
        got = CliRunner().invoke(gallery_app, ["calibrate", *([] if "--pairs" in args else [str(lfw_dir)]), *args,
                                               "--no-progress"])
        assert got.exit_code == 2 and "--hubness-k needs a labelled faces folder, --cohort FILE" in got.output
    small = Cohort(np.eye(4, 512, dtype=np.float32), ("a", "b", "c", "d"), "facenet-casia-webface").save(
        tmp_path / "small.npz")
    got = CliRunner().invoke(gallery_app, ["calibrate", str(lfw_dir), "--cohort", str(small), "--hubness-k", "5",
                                           "--no-progress"])
    assert got.exit_code == 2 and "holds 4 faces: --hubness-k 5 needs at least that many" in got.output
