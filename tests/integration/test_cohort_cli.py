"""`rfr cohort` on synthetic CCTV stills made by `rfr degrade` from shared faces: the deployed models, a cohort file
the cluster service's hubness correction reads (cluster.cohort_file)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from typer.testing import CliRunner

from rfr.cluster.clusterer import rule_of
from rfr.core.image_files import identity_folders
from rfr.core.settings import ClusterSettings
from rfr.gallery.scoring import Cohort
from rfr.tools.cohort_cli import app as cohort_app  # one command: typer runs it without its name
from rfr.tools.eval.cli import app as eval_app


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
