"""``rfr eval`` (identification accuracy and speed on labelled faces) and ``rfr degrade`` (synthetic CCTV stills).

Mounted on the ``rfr`` command by :mod:`rfr.tools.cli`; nothing heavy is imported until a command runs.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, help="Evaluation: accuracy, calibration and speed on labelled faces.")


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise typer.BadParameter(f"{what}: comma-separated numbers expected, got {text!r}") from exc
    if not values:
        raise typer.BadParameter(f"{what}: at least one value expected")
    return values


def _fail(message: str) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(2)


@app.command("eval")
def eval_command(
    out: Annotated[Path, typer.Option(help="Folder for report.json, report.md and the plots.")],
    gallery: Annotated[Path | None, typer.Option(help="Gallery folder: DIR/<identity>/<images>.")] = None,
    probes: Annotated[Path | None, typer.Option(help="Probe folder: DIR/<identity>/<images>; identities without "
                                                     "a gallery folder are the non-enrolled probes.")] = None,
    labelled: Annotated[Path | None, typer.Option(help="Instead of --gallery/--probes: ONE labelled folder "
                                                       "(e.g. LFW) split into gallery and probes, seeded.")] = None,
    enrolled: Annotated[int, typer.Option(help="--labelled: identities (>= 2 images) to enrol; 0 = all.")] = 200,
    nonmated: Annotated[int, typer.Option(help="--labelled: identities held out as non-enrolled probes.")] = 200,
    distractors: Annotated[int, typer.Option(help="--labelled: single-image identities enrolled, never probed.")] = 0,
    strangers: Annotated[str, typer.Option(help="--labelled: draw the non-enrolled identities from 'any' identity "
                                                "or from the 'singles' (one image each) only.")] = "any",
    exclude_training: Annotated[bool, typer.Option(help="--labelled: leave out the embedder fine-tune's training "
                                                        "identities (rfr/tools/train/split.py).")] = True,
    max_probes: Annotated[int, typer.Option(help="Probe images per identity, at most.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed of the split, the calibration halves and the scenes.")] = 0,
    degrade: Annotated[str, typer.Option(help="Also probe with synthetic CCTV scenes at these levels, "
                                              "e.g. 'clean,mild,hard' (rfr/tools/degrade.py).")] = "",
    face_px: Annotated[float, typer.Option(help="Face width in the degraded scenes, pixels.")] = 48.0,
    scene: Annotated[str, typer.Option(help="Degraded scene size WxH.")] = "640x480",
    ranks: Annotated[str, typer.Option(help="Ranks k for the rank-k rates.")] = "1,5,10",
    fpir: Annotated[str, typer.Option(help="FPIR targets.")] = "0.1,0.01,0.001",
    ship_fpir: Annotated[float, typer.Option(help="FPIR the recommended threshold is calibrated for.")] = 0.01,
    searcher: Annotated[str, typer.Option(help="'milvus' (the real gallery on a milvus-lite server started for "
                                               "the run) or 'memory' (exact, in process).")] = "milvus",
    milvus_uri: Annotated[str | None, typer.Option(help="Use this Milvus instead of starting one "
                                                         "(a temporary collection, dropped afterwards).")] = None,
    ablation: Annotated[bool, typer.Option(help="Detect each probe once, then score every issue-#17 lever "
                                                 "(embedder variants, cohort score_norm, fused templates, threshold "
                                                 "policy) on the same crops, exact search; adds the ablation table.")
                        ] = False,
    crops_cache: Annotated[Path | None, typer.Option(help="--ablation: keep the faces found here and reuse them "
                                                          "when the split, conditions and detect settings are the "
                                                          "same (a local cache; only a file this command wrote).")
                           ] = None,
    progress: Annotated[bool, typer.Option(help="Show progress.")] = True,
) -> None:
    """Measure rank-k, TPIR at fixed FPIR, DET and a calibrated threshold through the real pipeline code."""
    from rfr.core.logs import setup_logging
    from rfr.core.settings import load_settings
    from rfr.tools.eval import splits
    from rfr.tools.eval.report import build_report, write_report
    from rfr.tools.eval.runner import EvalOptions, run_eval
    from rfr.tools.eval.scenes import parse_levels, parse_scene
    from rfr.tools.train.split import training_identities

    settings = load_settings()
    setup_logging(settings.log_level, json_lines=settings.log_json)
    if searcher not in ("milvus", "memory"):
        raise _fail(f"--searcher must be 'milvus' or 'memory', not {searcher!r}")
    try:
        options = EvalOptions(
            levels=tuple(parse_levels(degrade)), face_px=face_px, scene_size=parse_scene(scene), seed=seed,
            ranks=tuple(sorted({int(k) for k in _floats(ranks, "--ranks")})), fpir_targets=_floats(fpir, "--fpir"),
            ship_fpir=ship_fpir, gallery="milvus" if searcher == "milvus" else "memory", milvus_uri=milvus_uri,
            batch_size=settings.embed.batch_size, command="rfr " + shlex.join(sys.argv[1:]),
            ablation=ablation, crops_cache=crops_cache,
        )
        if labelled is not None:
            if strangers not in ("any", "singles"):
                raise _fail(f"--strangers must be 'any' or 'singles', not {strangers!r}")
            plan = splits.LabelledPlan(enrolled or None, nonmated, distractors, max_probes, seed,
                                       "singles" if strangers == "singles" else "any",
                                       training_identities(labelled) if exclude_training else frozenset())
            split = splits.from_labelled(labelled, plan)
        elif gallery is not None and probes is not None:
            split = splits.from_folders(gallery, probes, seed, max_probes)
        else:
            raise _fail("give --gallery and --probes, or --labelled")
    except (ValueError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"split: {split.summary()}", err=True)
    report = build_report(run_eval(settings, split, options, _progress if progress else None))
    paths = write_report(report, out)
    typer.echo(f"rank-1 ({report['primary_condition']}): {report['rank1']:.4f}")
    rec = report["recommended_threshold"]
    if rec.get("threshold") is not None:
        typer.echo(f"threshold for FPIR {rec['target_fpir']:g}: {rec['threshold']:.4f}")
    typer.echo("wrote " + ", ".join(str(p) for p in paths))


def _progress(stage: str, done: int, total: int) -> None:
    typer.echo(f"\r{stage}: {done}/{total}", err=True, nl=done >= total)


@app.command("degrade")
def degrade_command(
    src: Annotated[Path, typer.Option("--in", help="Face photos: a folder (sub-folders per identity kept).")],
    out: Annotated[Path, typer.Option(help="Where the scenes (PNG) and truth.csv go.")],
    level: Annotated[str, typer.Option(help="Degradation level: clean, mild or hard (rfr/tools/degrade.py).")] = "mild",
    face_px: Annotated[float, typer.Option(help="Face width in the scene, pixels.")] = 48.0,
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same scenes, bit for bit.")] = 0,
    scene: Annotated[str, typer.Option(help="Scene size WxH.")] = "640x480",
    frame: Annotated[bool, typer.Option(help="Find the face in each photo first so it lands at exactly "
                                             "--face-px (else assume LFW framing).")] = True,
) -> None:
    """Write seeded, reproducible synthetic CCTV stills of each photo, to see where accuracy falls off."""
    from rfr.core.imaging import ImageLimits
    from rfr.core.logs import setup_logging
    from rfr.core.settings import load_settings
    from rfr.tools.eval.scenes import DegradeJob, degrade_folder, parse_levels, parse_scene

    settings = load_settings()
    setup_logging(settings.log_level, json_lines=settings.log_json)
    try:
        job = DegradeJob(parse_levels(level)[0], face_px, parse_scene(scene), seed)
    except (ValueError, IndexError) as exc:
        raise _fail(f"bad --level or --scene: {exc}") from exc
    if not src.is_dir():
        raise _fail(f"no such folder: {src}")
    limits = ImageLimits.from_settings(settings.ingest)
    if not frame:
        count = degrade_folder(src, out, job, None, limits)
    else:
        from rfr.core.geometry import Box
        from rfr.face.detector import MediaPipeDetector
        from rfr.models import detector_model_path

        with MediaPipeDetector(detector_model_path(settings.model_dir), settings.detect, "full") as detector:

            def locate(photo: object) -> Box | None:
                found = detector.detect(photo)  # type: ignore[arg-type]
                return max((d.box for d in found), key=lambda b: b.area) if found else None

            count = degrade_folder(src, out, job, locate, limits)
    typer.echo(f"wrote {count} {job.level} scenes ({job.face_px:g} px faces) to {out} (truth.csv has the boxes)")
