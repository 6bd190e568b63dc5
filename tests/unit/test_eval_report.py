"""The eval split rules and the report (JSON, Markdown, plots) on hand-made outcomes; no models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rfr.tools.eval import splits
from rfr.tools.eval.probes import ORIGINAL, ProbeOutcome, StageTimes
from rfr.tools.eval.report import build_report, write_report
from rfr.tools.eval.runner import EvalOptions, EvalRun
from rfr.tools.eval.scenes import parse_levels, parse_scene


def _tree(root: Path, counts: dict[str, int]) -> Path:
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            (root / name / f"{name}_{i + 1:04d}.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(60))  # JPEG by content
    return root


def test_labelled_split_rules(tmp_path: Path) -> None:
    counts = {f"multi{i}": 4 for i in range(6)} | {f"single{i}": 1 for i in range(6)}
    root = _tree(tmp_path / "lfw", counts)
    plan = splits.LabelledPlan(enrolled=3, nonmated=4, distractors=2, max_probes_per_id=2, seed=1)
    split = splits.from_labelled(root, plan)
    again = splits.from_labelled(root, plan)
    assert split == again  # seeded
    enrolled = {p.sample.identity for p in split.probes if p.mated}
    held_out = {p.sample.identity for p in split.probes if not p.mated}
    gallery_ids = split.gallery_identities
    assert len(enrolled) == 3 and len(held_out) == 4 and len(gallery_ids) == 5  # 3 enrolled + 2 distractors
    assert not held_out & gallery_ids and enrolled <= gallery_ids
    for s in split.gallery:  # first image of each identity goes to the gallery, never probed
        assert s.path.name.endswith("_0001.jpg")
        assert all(p.sample.path != s.path for p in split.probes)
    for ident in enrolled:  # images 2..3 (cap 2) are the probes
        assert sorted(p.sample.path.name for p in split.probes if p.sample.identity == ident) == [
            f"{ident}_0002.jpg", f"{ident}_0003.jpg"]
    assert all(p.half in (splits.CALIBRATION, splits.EVALUATION) for p in split.probes)
    # the half depends on the identity only: all probes of one identity share it
    assert all(len({p.half for p in split.probes if p.sample.identity == i}) == 1 for i in enrolled | held_out)


def test_folder_split_marks_identities_without_a_gallery_folder_as_nonmated(tmp_path: Path) -> None:
    gallery = _tree(tmp_path / "g", {"ann": 1, "bob": 2})
    probes = _tree(tmp_path / "p", {"ann": 3, "cid": 1})
    split = splits.from_folders(gallery, probes, max_probes_per_id=2)
    assert [(p.sample.identity, p.mated) for p in split.probes] == [("ann", True), ("ann", True), ("cid", False)]
    assert split.summary()["gallery_images"] == 3
    with pytest.raises(FileNotFoundError):
        splits.from_folders(tmp_path / "missing", probes)


def test_option_parsers() -> None:
    assert parse_scene("640x480") == (640, 480)
    assert parse_levels("mild, hard") == ["mild", "hard"]
    with pytest.raises(ValueError):
        parse_levels("foggy")
    with pytest.raises(ValueError):
        parse_scene("big")


def _outcome(subject: str, mated: bool, half: str, cands: tuple[tuple[str, float], ...], cond: str = ORIGINAL,
             failure: str | None = None) -> ProbeOutcome:
    return ProbeOutcome(f"{subject}/{len(cands)}{half}", subject, mated, half, cond, cands, failure,
                        face_px=None if failure else 60.0, sharpness=None if failure else 100.0)


def test_report_files_and_numbers(tmp_path: Path) -> None:
    cal, ev = splits.CALIBRATION, splits.EVALUATION
    outcomes = [
        _outcome("a", True, cal, (("a", 0.9), ("b", 0.2))),
        _outcome("b", True, cal, (("c", 0.5), ("b", 0.4))),
        _outcome("c", True, ev, (("c", 0.7),)),
        _outcome("d", True, ev, (), failure="no_face"),
        _outcome("x", False, cal, (("a", 0.6),)),
        _outcome("y", False, cal, (("b", 0.3),)),
        _outcome("z", False, ev, (("c", 0.65),)),
        _outcome("w", False, ev, (("a", 0.1),)),
    ]
    split = splits.Split((), (), "hand-made")
    run = EvalRun(split, EvalOptions(ranks=(1, 2), fpir_targets=(0.5,), ship_fpir=0.5, command="rfr eval test"),
                  outcomes=outcomes, times={ORIGINAL: StageTimes(stills=8, detect=0.4)})
    report = build_report(run)
    cond = report["conditions"][ORIGINAL]
    assert report["rank1"] == pytest.approx(0.5)  # a and c at rank 1; b at rank 2; d not searched
    assert cond["rank"]["2"] == pytest.approx(0.75)
    assert cond["failures"]["no_face"] == 1 and cond["detection_failure_rate"] == pytest.approx(1 / 8)
    # calibration half non-mated tops 0.6, 0.3: FPIR 0.5 allows one -> threshold just above 0.3
    rec = report["recommended_threshold"]
    assert rec["threshold"] == pytest.approx(0.3001)
    assert rec["evaluation_at_threshold"][ORIGINAL]["fpir"] == pytest.approx(0.5)  # 0.65 passes, 0.1 does not
    assert rec["evaluation_at_threshold"][ORIGINAL]["tpir"] == pytest.approx(0.5)  # c passes, d was not searched
    paths = write_report(report, tmp_path / "out")
    assert {p.name for p in paths} == {"report.json", "report.md", "det.png", "cmc.png", "quality.png", "scores.png"}
    assert json.loads((tmp_path / "out" / "report.json").read_text())["rank1"] == pytest.approx(0.5)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "rfr eval test" in md and "Threshold to ship: 0.3001" in md
