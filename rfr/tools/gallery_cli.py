"""``rfr enrol``, ``rfr gallery list|count|delete`` and ``rfr calibrate``.

The gallery (one Milvus collection per embedding model) is divided into watch-lists (``--watch-list``, e.g.
``custody``); the match service searches those named by ``RFR_MATCH__WATCH_LISTS``.

Every command talks to Milvus by URI (``settings.milvus.uri``, the milvus-lite server of ``rfr up`` by default);
none opens a milvus-lite data file itself. Search results are candidates for trained human review, never
identifications.

The review service is told of every change (``rfr.gallery.v1``, :mod:`rfr.tools.gallery_events`): ``rfr enrol``
keeps each enrolled photo in the gallery's blob store (``<blob_dir>/gallery``, content-addressed, apart from
the stills) and announces the photos it enrolled, with their templates, so that reviewers see a candidate's photo
and unsolved probes are searched again against them; ``rfr gallery delete`` announces the erasure. A failed
announcement exits 1 and says how to repeat it; ``--no-announce`` enrols or erases without telling the review
service (offline).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from tqdm import tqdm  # type: ignore[import-untyped]

from rfr.core.image_files import identity_folders
from rfr.core.logs import setup_logging
from rfr.core.settings import Settings, gallery_blob_dir, load_settings
from rfr.gallery.base import GalleryError
from rfr.gallery.extraction import MultiFacePolicy

if TYPE_CHECKING:
    from rfr.gallery.enrol import Enroller
    from rfr.gallery.extraction import PipelineExtractor

app = typer.Typer(add_completion=False, help="Gallery enrolment, administration and threshold calibration.")
gallery_app = typer.Typer(no_args_is_help=True, help="The enrolled gallery: list, count, erase a subject.")
app.add_typer(gallery_app, name="gallery")

WatchListOpt = Annotated[list[str] | None, typer.Option("--watch-list", "-w",
                                                        help="Watch-list name(s); default: all.")]
ReasonOpt = Annotated[str, typer.Option(help="Why: the authority or reference for this change, kept in the review "
                                              "service's audit log with who ran it.")]
AnnounceOpt = Annotated[bool, typer.Option("--announce/--no-announce", help="Tell the review service "
                                           "(rfr.gallery.v1; needs the broker); --no-announce works offline.")]
DEFAULT_FMRS = (1e-2, 1e-3, 1e-4)


def _settings() -> Settings:
    settings = load_settings()
    setup_logging(settings.log_level, json_lines=settings.log_json)
    # pymilvus warns on every query iterator that milvus-lite has no MVCC timestamp; nothing to act on here.
    logging.getLogger("pymilvus.client.iterator").setLevel(logging.ERROR)
    return settings


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(code)


def _checked(watch_lists: list[str] | None) -> list[str] | None:
    """The watch-list names given, or a usage error (exit 2) naming the first invalid one."""
    from rfr.gallery.base import check_watch_list_name

    try:
        for name in watch_lists or []:
            check_watch_list_name(name)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    return watch_lists


@app.command()
def enrol(
    source: Annotated[Path, typer.Argument(help="A folder DIR/<subject_id>/<photo>, or a CSV manifest "
                                                "(subject_id,image_path,metadata...).")],
    watch_list: Annotated[str, typer.Option("--watch-list", "-w", help="Watch-list to enrol onto.")] = "custody",
    multi_face: Annotated[str | None, typer.Option(help="Photo with several faces: 'largest' (warn) or 'reject'. "
                                                        "Default: settings.match.enrol_multi_face.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Photos per embedding call (embed.batch_size).")] = None,
    report: Annotated[Path | None, typer.Option(help="Write the full report (every file) as JSON here.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    allow_partial: Annotated[bool, typer.Option(
        "--allow-partial", help="Exit 0 even if some files were skipped or rejected, as long as one photo was "
                                "enrolled or already there.")] = False,
    allow_shared_photo: Annotated[bool, typer.Option(
        "--allow-shared-photo", help="Enrol a photo also given (or already enrolled) for another subject id, "
                                     "with a warning, instead of refusing it.")] = False,
    reason: ReasonOpt = "",
    announce: AnnounceOpt = True,
    announce_existing: Annotated[bool, typer.Option(
        "--announce-existing", help="Also announce the photos already enrolled (each is decoded and embedded again "
                                    "for its template, and kept in the blob store): after an announcement failed, "
                                    "or for photos enrolled offline or before the review service.")] = False,
) -> None:
    """Enrol labelled photos (several per subject) onto a watch-list; re-running skips what is already there.

    Which files are photos is decided by their content, not their name (see rfr/gallery/enrol_sources.py).

    Output: a line per file or manifest row (enrolled, existing, skipped, rejected, warning), then a summary.

    Each enrolled photo is kept in the gallery's blob store (blob_dir/gallery) and announced to the review service
    (rfr.gallery.v1).

    Exit 0 when every file was enrolled or already there and the review service was told, else 1 (see
    --allow-partial); 2 for a usage error.
    """
    from rfr.gallery.enrol import scan_source
    from rfr.tools.gallery_events import tell_enrolment

    settings = _settings()
    _checked([watch_list])
    if watch_list not in settings.match.watch_lists:
        typer.echo(f"note: the match service searches {', '.join(settings.match.watch_lists)} "
                   f"(RFR_MATCH__WATCH_LISTS), not {watch_list}", err=True)
    chosen = multi_face or settings.match.enrol_multi_face
    if chosen not in ("largest", "reject"):
        raise _fail(f"--multi-face must be 'largest' or 'reject', not {chosen!r}")
    if announce_existing and not announce:
        raise _fail("--announce-existing and --no-announce contradict each other")
    try:
        found = scan_source(source)
    except (OSError, ValueError) as exc:
        raise _fail(f"cannot read {source}: {exc}") from exc
    enroller, extractor = _enroller(settings, watch_list, "reject" if chosen == "reject" else "largest",
                                    batch_size, allow_shared_photo, announce_existing)
    unannounced = " (photos enrolled before it were not announced: run again with --announce-existing)"
    try:
        with tqdm(total=len(found.items), unit="img", disable=not progress, desc=f"enrol {watch_list}") as bar:
            result = enroller.run_source(found, progress=bar.update)
    except GalleryError as exc:
        raise _fail(f"gallery error: {exc} (is milvus running at {settings.milvus.uri}? `rfr up` starts one)"
                    f"{unannounced if announce else ''}") from exc
    except OSError as exc:
        raise _fail(f"error: {exc}{unannounced if announce else ''}", 1) from exc
    finally:
        extractor.close()
    summary = result.to_dict()
    _print_enrol(summary, report)
    code = enrol_exit_code(summary, allow_partial)
    told = tell_enrolment(settings, result, reason, announce=announce, existing=announce_existing)
    if code:
        raise _fail(_why_not_zero(summary, source), code)
    if not told:
        raise typer.Exit(1)


def _enroller(settings: Settings, watch_list: str, policy: MultiFacePolicy, batch_size: int | None,
              allow_shared_photo: bool, embed_existing: bool) -> tuple[Enroller, PipelineExtractor]:
    """The enroller of ``rfr enrol`` and its extractor (to close): the real extractor and embedder, the gallery at
    ``milvus.uri``, photos kept in ``<blob_dir>/gallery`` (exit 1 when it cannot be written)."""
    from rfr.core.blobstore import FileBlobStore
    from rfr.gallery.enrol import Enroller
    from rfr.gallery.extraction import PipelineExtractor, load_embedder
    from rfr.gallery.milvus import open_gallery

    photo_dir = gallery_blob_dir(settings)
    photos = FileBlobStore(photo_dir)
    try:
        photos.check()
    except OSError as exc:
        raise _fail(f"cannot keep the photos in {photo_dir} (blob_dir/gallery): {exc}", 1) from exc
    embedder = load_embedder(settings)
    target = open_gallery(settings, embedder.model_id, embedder.weights_sha256)
    extractor = PipelineExtractor(settings)
    return Enroller(extractor, embedder, target, watch_list, multi_face=policy,
                    batch_size=batch_size or settings.embed.batch_size, allow_shared_photo=allow_shared_photo,
                    photos=photos, embed_existing=embed_existing), extractor


STATUS_OF = {"enrolled": "enrolled", "already_enrolled": "existing"}


def enrol_lines(summary: dict[str, Any]) -> list[str]:
    """One line per file (and per warning), by manifest line then file: ``<status> <reason> <file>  <detail>``."""
    rows = [(STATUS_OF.get(p["reason"], "enrolled"), p) for p in summary["done_list"]]
    rows += [("skipped", p) for p in summary["skips"]] + [("rejected", p) for p in summary["rejections"]]
    rows += [("warning", p) for p in summary["warning_list"]]
    rows.sort(key=lambda r: (r[1]["line"] or 0, r[1]["source_ref"], r[0] == "warning"))
    out = []
    for status, p in rows:
        where = f" (line {p['line']})" if p["line"] else ""
        reason = "-" if status in ("enrolled", "existing") else p["reason"]
        out.append(f"{status:<9} {reason:<21} {p['source_ref']}{where}  {p['detail']}".rstrip())
    return out


def enrol_summary_line(summary: dict[str, Any]) -> str:
    """``enrol <watch-list>: <n> file(s): <e> enrolled, <x> already enrolled, <s> skipped (...), <r> rejected
    (...), <w> warning(s)``."""
    def by(reasons: dict[str, int]) -> str:
        return " (" + ", ".join(f"{k} {v}" for k, v in reasons.items()) + ")" if reasons else ""

    return (f"enrol {summary['watch_list']}: {summary['files']} file(s): {summary['enrolled']} enrolled, "
            f"{summary['skipped_existing']} already enrolled, {summary['skipped']} skipped"
            f"{by(summary['skipped_by_reason'])}, {summary['rejected']} rejected{by(summary['rejected_by_reason'])}, "
            f"{summary['warnings']} warning(s)")


def enrol_exit_code(summary: dict[str, Any], allow_partial: bool) -> int:
    """0, or 1: nothing enrolled nor already there, or anything skipped or rejected without ``allow_partial``."""
    if summary["enrolled"] + summary["skipped_existing"] == 0:
        return 1
    return 0 if allow_partial or summary["skipped"] + summary["rejected"] == 0 else 1


def _why_not_zero(summary: dict[str, Any], source: Path) -> str:
    if summary["files"] == 0:
        return f"error: nothing to enrol in {source}"
    if summary["enrolled"] + summary["skipped_existing"] == 0:
        return "error: no photo was enrolled"
    return "not every file was enrolled; --allow-partial accepts skipped and rejected files"


def _print_enrol(summary: dict[str, Any], report: Path | None) -> None:
    for line in enrol_lines(summary):
        typer.echo(line)
    short = {k: v for k, v in summary.items() if k not in ("rejections", "warning_list", "skips", "done_list")}
    typer.echo(json.dumps(short, indent=2))
    typer.echo(enrol_summary_line(summary), err=True)
    if report:
        report.write_text(json.dumps(summary, indent=2))


@gallery_app.command("list")
def gallery_list(watch_lists: WatchListOpt = None,
                 as_json: Annotated[bool, typer.Option("--json", help="JSON lines.")] = False) -> None:
    """Every enrolled subject, with its watch-list and number of photos (a line per watch-list it is on)."""
    from rfr.gallery.milvus import open_gallery

    settings = _settings()
    try:
        subjects = open_gallery(settings).list_subjects(_checked(watch_lists))
    except GalleryError as exc:
        raise _fail(f"gallery error: {exc}") from exc
    for s in subjects:
        line = json.dumps({"watch_list": s.watch_list, "subject_id": s.subject_id, "faces": s.faces})
        typer.echo(line if as_json else f"{s.watch_list:<16} {s.subject_id:<40} {s.faces}")


@gallery_app.command("count")
def gallery_count(watch_lists: WatchListOpt = None) -> None:
    """Number of enrolled photos (on the watch-lists given, default all)."""
    from rfr.gallery.milvus import open_gallery

    settings = _settings()
    try:
        typer.echo(str(open_gallery(settings).count(_checked(watch_lists))))
    except GalleryError as exc:
        raise _fail(f"gallery error: {exc}") from exc


@gallery_app.command("delete")
def gallery_delete(
    subject_id: Annotated[str, typer.Argument(help="Subject whose every photo is erased.")],
    watch_lists: WatchListOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    reason: ReasonOpt = "",
    announce: AnnounceOpt = True,
) -> None:
    """Erase a subject: every vector of theirs (on every watch-list, or only those given) is deleted.

    The review service is told first (rfr.gallery.v1), then the photos are erased: when it cannot be told, nothing
    is erased (exit 1), so running the command again completes both; --no-announce erases from the gallery alone.
    """
    from rfr.gallery.changes import erasure_changes
    from rfr.gallery.milvus import open_gallery
    from rfr.tools import gallery_events

    settings = _settings()
    _checked(watch_lists)
    where = "watch-list(s) " + ", ".join(watch_lists) if watch_lists else "every watch-list"
    if not yes:
        typer.confirm(f"Erase every photo of {subject_id} from {where}?", abort=True)
    gallery = open_gallery(settings)
    try:
        faces = gallery.subject_faces(subject_id, watch_lists)
        changes = erasure_changes(subject_id, faces, gallery.model_id, gallery_events.cli_actor(), reason)
        if announce and changes and not gallery_events.announce_or_explain(
                settings, changes, gallery_events.not_told_erased(subject_id)):
            raise typer.Exit(1)
        erased = gallery.delete_subject(subject_id, watch_lists)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    except GalleryError as exc:
        raise _fail(f"gallery error: {exc}") from exc
    typer.echo(f"erased {erased} photo(s) of {subject_id} from {where}")
    topic = gallery_events.gallery_topic(settings)
    if changes:
        typer.echo(f"announced the erasure of {len(faces)} photo(s) to the review service ({topic})" if announce
                   else f"not announced (--no-announce): the review service ({topic}) still shows these photos",
                   err=True)
    if erased == 0:
        raise typer.Exit(1)


def _embed_folder(photos: dict[str, list[Path]], extractor: PipelineExtractor, embedder: Any, cache: Path | None,
                  batch_size: int, progress: bool) -> tuple[Any, dict[str, int]]:
    from rfr.gallery import faceset

    with tqdm(total=sum(map(len, photos.values())), unit="img", disable=not progress, desc="embed") as bar:
        return faceset.embed_labelled(photos, extractor, embedder, cache=cache, batch_size=batch_size,
                                      progress=bar.update)


def _cohort(settings: Settings, path: Path | None, source: Path | None, extractor: PipelineExtractor,
            embedder: Any, progress: bool) -> Any:
    """The cohort for T-norm calibration: built from ``source`` and written to ``path``, or read from ``path``."""
    from rfr.gallery.scoring import Cohort
    from rfr.tools.cohort_cli import build_cohort, left_out

    if path is None:
        return None
    if source is None:
        try:
            return Cohort.load(path, embedder.model_id)
        except (OSError, ValueError, KeyError) as exc:
            raise _fail(f"cohort {path}: {exc}") from exc
    group, rejected = build_cohort(source, extractor, embedder, batch_size=settings.embed.batch_size,
                                   progress=progress)
    group.save(path)
    typer.echo(f"wrote a cohort of {len(group.vectors)} faces to {path}; left out: {left_out(rejected)}", err=True)
    return group


def _gallery_size(settings: Settings) -> int | None:
    """Photos on the configured watch-lists of the configured gallery, or None when it cannot be reached."""
    from rfr.gallery.milvus import open_gallery

    try:
        gallery = open_gallery(settings)
        try:
            return gallery.count(settings.match.watch_lists)
        finally:
            gallery.close()
    except (GalleryError, OSError) as exc:
        typer.echo(f"gallery size unknown ({exc}): give --gallery-size for the FPIR thresholds", err=True)
        return None


@app.command()
def calibrate(
    faces: Annotated[Path | None, typer.Argument(help="Labelled faces DIR/<identity>/*.jpg (e.g. LFW).")] = None,
    pairs: Annotated[Path | None, typer.Option(help="Or: CSV path_a,path_b,same[,split].")] = None,
    target_fmr: Annotated[list[float] | None, typer.Option(help="Target false-match rate(s).")] = None,
    eval_fraction: Annotated[float, typer.Option(help="Share of identities held out for evaluation.")] = 0.5,
    seed: Annotated[int, typer.Option(help="Seed of the identity split.")] = 0,
    max_per_identity: Annotated[int | None, typer.Option(help="Use at most this many photos per identity.")] = 20,
    cache: Annotated[Path | None, typer.Option(help="Cache the embeddings here (.npz).")] = None,
    output: Annotated[Path | None, typer.Option("--json", help="Write the report as JSON here.")] = None,
    cohort: Annotated[Path | None, typer.Option(help="Cohort file (.npz): calibrate T-norm scores "
                                                     "(match.score_norm=cohort); with --cohort-from, written here.")
                      ] = None,
    cohort_from: Annotated[Path | None, typer.Option(help="Build the cohort from this folder DIR/<identity>/*.jpg "
                                                          "(first photo of each identity; none in the gallery).")
                           ] = None,
    cohort_top: Annotated[int | None, typer.Option(help="Highest cohort scores per probe (default "
                                                        "match.cohort_top).")] = None,
    hubness_k: Annotated[int | None, typer.Option(help="With --cohort: calibrate CSLS scores with this k "
                                                       "(match.score_norm=hubness, match.hubness_k) instead of "
                                                       "T-norm; build the cohort of CCTV-like faces with rfr cohort."
                                                       )] = None,
    gallery_size: Annotated[int | None, typer.Option(help="State the threshold for each --target-fpir at this many "
                                                          "gallery photos (default: the configured gallery's).")
                            ] = None,
    target_fpir: Annotated[list[float] | None, typer.Option(help="Target FPIR(s) at the gallery size.")] = None,
    table_out: Annotated[Path | None, typer.Option(help="Write the threshold table (match.threshold_table, for "
                                                        "threshold_policy=gallery_size) here.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Report the threshold for each target false-match rate, and for each target FPIR at the gallery's size,
    calibrated and evaluated on disjoint data (docs/calibration.md)."""
    from rfr.gallery import calibrate as cal
    from rfr.gallery.extraction import PipelineExtractor, load_embedder

    if (faces is None) == (pairs is None):
        raise _fail("give either a labelled faces folder or --pairs CSV")
    if cohort_from is not None and cohort is None:
        raise _fail("--cohort-from needs --cohort FILE to write the cohort to")
    if hubness_k is not None and (cohort is None or hubness_k < 1 or pairs is not None):
        raise _fail("--hubness-k needs a labelled faces folder, --cohort FILE and a k of at least 1")
    settings = _settings()
    targets = target_fmr or list(DEFAULT_FMRS)
    embedder = load_embedder(settings)
    extractor = PipelineExtractor(settings)
    try:
        if faces is not None:
            group = _cohort(settings, cohort, cohort_from, extractor, embedder, progress)
            if hubness_k and len(group.vectors) < hubness_k:
                raise _fail(f"cohort {cohort} holds {len(group.vectors)} faces: --hubness-k {hubness_k} needs at "
                            "least that many")
            photos = {k: v[:max_per_identity] for k, v in identity_folders(faces).items()}
            data, rejected = _embed_folder(photos, extractor, embedder, cache, settings.embed.batch_size, progress)
            top = settings.match.cohort_top if cohort_top is None else cohort_top
            scores = cal.split_scores(data, eval_fraction, seed, group, top, hubness_k or 0)
            result = cal.calibrate_folder(data, targets, eval_fraction, seed, scores) | {"rejected_photos": rejected}
            size = gallery_size if gallery_size is not None else _gallery_size(settings)
            if size:
                result["at_gallery_size"] = cal.gallery_size_points(scores, target_fpir or [0.01], size)
            if table_out is not None:
                digest = hashlib.sha256(cohort.read_bytes()).hexdigest() if group and cohort else ""
                cal.threshold_table(scores, embedder.model_id, digest, str(faces)).save(table_out)
        elif pairs is not None:
            from rfr.gallery import faceset

            by_split = faceset.pairs_scores(faceset.read_pairs(pairs), extractor, embedder)
            if "calibration" not in by_split:
                raise _fail(f"{pairs}: no usable calibration pairs")
            result = cal.calibrate_pairs(by_split, targets)
    finally:
        extractor.close()
    if table_out is not None and faces is not None:
        typer.echo(f"wrote the threshold table to {table_out}", err=True)
    text = json.dumps({"model_id": embedder.model_id, "weights_sha256": embedder.weights_sha256} | result, indent=2)
    typer.echo(text)
    if output:
        output.write_text(text)
