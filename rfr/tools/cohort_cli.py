"""``rfr cohort``: a fixed cohort of faces of people who are not sought, for the scores that are read against one.

Two settings read a cohort file (.npz, :class:`rfr.gallery.scoring.Cohort`: unit templates, one identity label
each, the model that made them): ``match.cohort_file`` (T-norm, built here or by ``rfr calibrate --cohort-from``)
and ``cluster.cohort_file`` (the cluster service's hubness correction, ``cluster.hubness_k``; rfr/cluster/rule.py).

A cohort should look like the faces it corrects. For the cluster service those are CCTV stills, so build its
cohort from CCTV-like faces of people who are not sought: real stills where a force has them, else synthetic ones
made from photos (never the custody gallery's, never the unknowns being clustered)::

    rfr degrade --in PHOTOS --out STILLS --level mild --face-px 48 --scene 1920x1080
    rfr cohort STILLS --out unknowns-cohort.npz

Each face goes through the deployed detect -> align -> quality gate -> embed code; stills without a usable face
are counted and left out. A cohort is tied to its embedding model: rebuild it when the model changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from tqdm import tqdm  # type: ignore[import-untyped]

from rfr.core.image_files import identity_folders
from rfr.core.logs import setup_logging
from rfr.core.settings import load_settings

if TYPE_CHECKING:
    from rfr.gallery.extraction import PipelineExtractor
    from rfr.gallery.scoring import Cohort

app = typer.Typer(add_completion=False)


def build_cohort(source: Path, extractor: PipelineExtractor, embedder: Any, *, per_identity: int = 1,
                 batch_size: int = 32, progress: bool = True) -> tuple[Cohort, dict[str, int]]:
    """The cohort of ``source`` (``DIR/<identity>/<image>``, the first ``per_identity`` images of each identity)
    and the images left out, by reason. Raises FileNotFoundError for a missing folder and ValueError when fewer than
    two faces remain."""
    from rfr.gallery import faceset
    from rfr.gallery.scoring import Cohort

    photos = {k: v[:per_identity] for k, v in identity_folders(source).items()}
    with tqdm(total=sum(map(len, photos.values())), unit="img", disable=not progress, desc="cohort") as bar:
        data, rejected = faceset.embed_labelled(photos, extractor, embedder, batch_size=batch_size,
                                                progress=bar.update)
    names = tuple(data.names[int(i)] for i in data.labels)
    return Cohort(data.vectors, names, embedder.model_id, embedder.weights_sha256, str(source)), rejected


def left_out(rejected: dict[str, int]) -> str:
    """The images a cohort left out, by reason (``"2 no_face, 1 unreadable"``), or ``"none"``."""
    return ", ".join(f"{n} {why}" for why, n in sorted(rejected.items()) if n) or "none"


@app.command("cohort")
def cohort_command(
    source: Annotated[Path, typer.Argument(help="Faces of people not sought: DIR/<identity>/<image>.")],
    out: Annotated[Path, typer.Option(help="The cohort file to write (.npz).")],
    per_identity: Annotated[int, typer.Option(min=1, help="Images used per identity (first by name).")] = 1,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Embed a folder of faces of people who are not sought into a cohort file (cluster.cohort_file,
    match.cohort_file) with the configured model."""
    from rfr.gallery.extraction import PipelineExtractor, load_embedder

    settings = load_settings()
    setup_logging(settings.log_level, json_lines=settings.log_json)
    embedder = load_embedder(settings)
    extractor = PipelineExtractor(settings)
    try:
        group, rejected = build_cohort(source, extractor, embedder, per_identity=per_identity,
                                       batch_size=settings.embed.batch_size, progress=progress)
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"rfr cohort: {exc}", err=True)
        raise typer.Exit(2) from exc
    finally:
        extractor.close()
    group.save(out)
    typer.echo(f"wrote a cohort of {len(group.vectors)} faces ({group.model_id}) to {out}; "
               f"left out: {left_out(rejected)}")
