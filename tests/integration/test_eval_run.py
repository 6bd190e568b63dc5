"""`rfr eval` and `rfr degrade` end to end: real models, the real Milvus gallery, a tiny LFW split."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

from support.stack import run_rfr

RANK1_FLOOR = 0.8
"""Measured rank-1 on this split (10 enrolled, 10 non-enrolled identities, seed 0): 0.94 (15 of 16 mated probes;
the 16th was gated). The floor leaves room for precision and hardware differences."""


def _rfr(args: list[str], model_dir: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return run_rfr(args, dict(os.environ, RFR_MODEL_DIR=str(model_dir), RFR_LOG_LEVEL="WARNING"), timeout)


def test_eval_on_a_tiny_lfw_split(lfw_dir: Path, model_dir: Path, milvus_uri: str, tmp_path: Path) -> None:
    out = tmp_path / "report"
    done = _rfr(["eval", "--labelled", str(lfw_dir), "--enrolled", "10", "--nonmated", "10", "--seed", "0",
                 "--degrade", "mild", "--face-px", "48", "--milvus-uri", milvus_uri, "--out", str(out),
                 "--no-progress"], model_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("report.json", "report.md", "det.png", "cmc.png", "quality.png", "scores.png"):
        assert (out / name).stat().st_size > 0, name
    report = json.loads((out / "report.json").read_text())
    assert report["split"]["gallery_identities"] == 10 and report["split"]["nonmated_identities"] == 10
    assert report["enrolment"]["enrolled"] >= 9
    assert set(report["conditions"]) == {"original", "mild"}
    original = report["conditions"]["original"]
    assert report["rank1"] == original["rank"]["1"]
    assert report["rank1"] >= RANK1_FLOOR, report["rank1"]
    assert original["detection_failure_rate"] <= 0.1
    assert original["rank"]["1"] <= original["rank"]["5"] <= original["rank"]["10"]
    assert report["conditions"]["mild"]["probes"] == original["probes"]
    assert report["recommended_threshold"]["threshold"] is not None
    assert "rfr eval --labelled" in (out / "report.md").read_text()


def test_degrade_is_seeded_and_reproducible(lfw_dir: Path, model_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "photos"
    people = sorted(p for p in lfw_dir.iterdir() if p.is_dir())[:3]
    for person in people:
        (src / person.name).mkdir(parents=True)
        first = sorted(person.iterdir())[0]
        (src / person.name / first.name).symlink_to(first)
    runs = []
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        done = _rfr(["degrade", "--in", str(src), "--out", str(tmp_path / name), "--level", "mild",
                     "--face-px", "40", "--seed", str(seed)], model_dir, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        runs.append(sorted((tmp_path / name).rglob("*.png")))
    assert len(runs[0]) == 3
    assert [p.read_bytes() for p in runs[0]] == [p.read_bytes() for p in runs[1]]
    assert [p.read_bytes() for p in runs[0]] != [p.read_bytes() for p in runs[2]]
    with (tmp_path / "a" / "truth.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 and all(r["framed"] == "1" for r in rows)
    assert all(float(r["box_w"]) == 40.0 for r in rows)


def test_ablation_scores_every_lever_on_the_same_crops(lfw_dir: Path, model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ablation"
    done = _rfr(["eval", "--labelled", str(lfw_dir), "--enrolled", "12", "--strangers", "singles", "--nonmated", "30",
                 "--distractors", "6", "--seed", "0", "--degrade", "mild", "--face-px", "40", "--searcher", "memory",
                 "--ablation", "--out", str(out), "--no-progress"], model_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    ab = report["ablation"]
    rows = {r["lever"]: r for r in ab["rows"]}
    today = rows["today's defaults"]
    assert set(today["conditions"]) == {"original", "mild"}
    assert today["conditions"]["original"]["rank1"] == report["conditions"]["original"]["rank"]["1"]
    for name, row in rows.items():  # T-norm never reorders a list: rank-1 of the cohort rows is today's
        if name.startswith("score_norm cohort"):
            assert {c: v["rank1"] for c, v in row["conditions"].items()} == {
                c: v["rank1"] for c, v in today["conditions"].items()}
        assert row["faces_per_s"] > 0
    assert any(name.startswith("all together") for name in rows)
    templates = ab["templates"]["today"]
    assert [t["gallery"].split(",")[0] for t in templates] == ["one photo per subject", "two photos", "two photos"]
    assert ab["policy"] and ab["cohort_identities"] >= 5
    hub_ks = [k for k in (5, 10, 20) if 2 * k <= ab["hub_cohort_faces"]]  # CSLS only with k it can fill
    assert ab["hubness_k_tried"] == hub_ks
    assert ab["hub_cohort_condition"] == "mild"
    assert (f"score_norm {ab['best_hubness']}" in rows) == bool(hub_ks)
    assert report["split"]["description"].endswith("200 training identities left out")
    assert "## Ablation" in (out / "report.md").read_text()
