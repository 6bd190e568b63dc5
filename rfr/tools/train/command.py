"""``rfr train lowres`` (also ``python -m rfr.tools.train.lowres``): train, check, and write the packaged delta.

Run it under the heavy-job lock on a shared host::

    flock /tmp/rfr-heavy.lock .venv/bin/rfr train lowres --labelled ../shared/faces/lfw

It prints one JSON object: the config, the held-out check (rfr/tools/train/check.py) of the base model and of
the fine-tune as shipped (fp16 delta merged), the delta's path, size and sha256 (pin it in
rfr/models/finetune.py ``DELTAS``), and the seconds spent.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from rfr.models._store import atomic_output, sha256_file

if TYPE_CHECKING:
    from rfr.tools.train.lowres import TrainConfig

logger = logging.getLogger(__name__)

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "models" / "weights" / "casia-webface-lowres-v1.delta.pt"

train_app = typer.Typer(no_args_is_help=True, help="Training of the embedder's fine-tunes (issue #17).")


@train_app.command("lowres")
def lowres(
    labelled: Annotated[Path, typer.Option(help="Labelled faces, one folder per identity (LFW).")],
    out: Annotated[Path, typer.Option(help="Where the delta goes (the packaged file by default).")] = DEFAULT_OUT,
    steps: Annotated[int, typer.Option(help="Optimiser steps.")] = 500,
    tune_from: Annotated[str, typer.Option(help="First InceptionResnetV1 stage tuned.")] = "mixed_6a",
    lora_rank: Annotated[int, typer.Option(help="Low-rank update rank (0: tune the weights fully).")] = 8,
    lr: Annotated[float, typer.Option(help="Learning rate of the tuned blocks.")] = 1e-3,
    identity_weight: Annotated[float, typer.Option(help="Weight of the identity-aware term.")] = 2.0,
    check: Annotated[bool, typer.Option(help="Run the held-out check before and after.")] = True,
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = 2,
    workers: Annotated[int, typer.Option(help="Processes making the degraded crops (0: none).")] = 0,
    device: Annotated[str, typer.Option(help="cpu, or cuda where a GPU is lent.")] = "cpu",
    scene: Annotated[float, typer.Option(help="Fraction of small samples made as rfr eval's CCTV scenes and found "
                                         "by the product's detector (0: v1's recipe; 0.7 was measured and not "
                                         "kept, docs/eval/README.md).")] = 0.0,
) -> None:
    """Fine-tune FaceNet's last blocks for small, soft faces; write the delta that ships with the package."""
    from rfr.tools.train.lowres import TrainConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = replace(TrainConfig(), steps=steps, tune_from=tune_from, lora_rank=lora_rank, lr=lr,
                     identity_weight=identity_weight, threads=threads, workers=workers, device=device,
                     recipe=replace(TrainConfig().recipe, scene=scene))
    typer.echo(json.dumps(run(labelled, out, config, check), indent=2))


def run(labelled: Path, out: Path, config: TrainConfig, check: bool) -> dict[str, object]:
    """Train with ``config`` on the training identities of ``labelled``; see the module docstring."""
    import torch

    from rfr.core.image_files import identity_folders
    from rfr.core.settings import load_settings
    from rfr.embedding.embedder import build_model, read_state_dict
    from rfr.models import facenet_weights_path
    from rfr.models.finetune import apply_delta
    from rfr.tools.train import check as held_out
    from rfr.tools.train.data import load_faceset
    from rfr.tools.train.lowres import config_summary, extract_delta, train
    from rfr.tools.train.split import training_identities

    started = time.perf_counter()
    model_dir = load_settings().model_dir
    cache = model_dir / "train" / f"detections-{labelled.resolve().name}.json"
    base = read_state_dict(facenet_weights_path(model_dir))
    training = training_identities(labelled)
    folders = identity_folders(labelled)
    faces = load_faceset({k: folders[k] for k in sorted(training)}, cache, model_dir)
    report: dict[str, object] = {"config": config_summary(config), "training_photos": len(faces)}
    data = held_out.check_set(labelled, training, cache, model_dir) if check else None
    if data is not None:
        torch.set_num_threads(config.threads)
        report["check_base"] = held_out.evaluate(build_model(base), data)
        logger.info("base: %s", report["check_base"])
    student = train(base, faces, config, model_dir)
    report["train_s"] = round(time.perf_counter() - started, 1)
    delta = extract_delta(student, base, config)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out) as fh:
        torch.save(delta, fh)
    report |= {"delta": str(out), "delta_bytes": out.stat().st_size, "delta_sha256": sha256_file(out),
               "delta_tensors": len(delta)}
    if data is not None:
        report["check_tuned"] = held_out.evaluate(build_model(apply_delta(base, delta)), data)
    report["total_s"] = round(time.perf_counter() - started, 1)
    return report


def main() -> None:
    train_app()
