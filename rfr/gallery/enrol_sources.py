"""Where enrolment photos come from: a folder per subject, or a CSV manifest; every file and row accounted for.

**Folder** ``DIR/<subject_id>/<photo>``: every entry under ``DIR`` is walked (:func:`rfr.core.image_files.walk`) and
ends as an :class:`EnrolItem` or as a skipped :class:`Problem` with its reason. A photo is a file whose *content*
is an image format the decoder takes (``x.jfif`` is a JPEG; ``notes.gif`` is skipped as ``unsupported_format:
GIF image``). Hidden files, links, empty or unreadable files follow :mod:`rfr.core.image_files`. Two layout rules:

- a file directly in ``DIR`` belongs to no subject: skipped as ``not_in_subject_folder``;
- a file in a sub-folder of a subject folder (``DIR/alice/2019/1.jpg``) is skipped as ``nested_folder``, not
  enrolled as ``alice``: a sub-folder may hold someone else's photos, and a wrong label in a custody gallery
  puts an innocent person on candidate lists. Move such photos up into the subject's folder to enrol them.

The folder name is the subject id exactly as written (an invalid one is rejected per photo by the enroller).

**Manifest** (``.csv``, UTF-8): header ``subject_id,image_path`` plus any further columns, kept as the face's
metadata; ``image_path`` is relative to the manifest's folder, or absolute. Nothing is stripped or repaired: a
subject id with surrounding spaces is rejected like any other invalid id. A row that cannot be enrolled is
rejected with its line number in the file (``line``): ``malformed_row`` (more or fewer fields than the
header), ``missing_image_path``, and the file's own reasons (``missing``, ``unsupported_format``, ...).
"""

from __future__ import annotations

import csv
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rfr.core.image_files import classify, walk
from rfr.core.reasons import Reason
from rfr.gallery.base import is_subject_id

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("subject_id", "image_path")


@dataclass(frozen=True)
class EnrolItem:
    """One photo to enrol for one subject; ``line`` is its manifest line (None for a folder source)."""

    subject_id: str
    path: Path
    source_ref: str
    metadata: dict[str, str] = field(default_factory=dict)
    line: int | None = None


@dataclass(frozen=True)
class Problem:
    """What happened to one file or row: ``reason`` is machine-readable, ``detail`` says why in words."""

    source_ref: str
    subject_id: str
    reason: str
    detail: str = ""
    line: int | None = None


@dataclass
class EnrolSource:
    """The photos to enrol, and every file (``skipped``) or manifest row (``rejected``) that will not be."""

    items: list[EnrolItem] = field(default_factory=list)
    skipped: list[Problem] = field(default_factory=list)
    rejected: list[Problem] = field(default_factory=list)


def scan_folder(root: Path) -> EnrolSource:
    """``root/<subject_id>/<photo>``: items sorted by subject then file name; every other entry skipped."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    source = EnrolSource()
    for found in walk(root):
        parts = found.rel.split("/")
        subject = parts[0] if len(parts) > 1 else ""
        if found.reason is not None:
            source.skipped.append(Problem(found.rel, subject, found.reason.value, found.detail))
        elif len(parts) == 1:
            source.skipped.append(Problem(found.rel, "", "not_in_subject_folder",
                                          f"{found.format} image directly in {root}: put it in a folder named "
                                          "after its subject"))
        elif len(parts) > 2:
            nested = "/".join(parts[:-1])
            source.skipped.append(Problem(found.rel, subject, "nested_folder",
                                          f"{found.format} image in sub-folder {nested}/, not enrolled as "
                                          f"{subject} (a sub-folder may hold another person); move it into "
                                          f"{subject}/ to enrol it"))
        else:
            source.items.append(EnrolItem(subject, found.path, found.rel))
    return source


def scan_manifest(manifest: Path) -> EnrolSource:
    """Rows of a CSV manifest (header ``subject_id,image_path[,metadata...]``); bad rows rejected by line number.

    Raises ``ValueError`` when a required column is missing or the file is not UTF-8, ``OSError`` when it
    cannot be read.
    """
    source = EnrolSource()
    with manifest.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise ValueError(f"{manifest}: missing column(s) {', '.join(missing)} (header: {reader.fieldnames})")
        for row in reader:
            _add_row(source, manifest, row, len(header), reader.line_num)
    return source


def _add_row(source: EnrolSource, manifest: Path, row: dict[str | None, str | list[str] | None], width: int,
             line: int) -> None:
    subject, ref = row.get("subject_id"), row.get("image_path")
    extra = row.get(None)
    if not isinstance(subject, str) or not isinstance(ref, str) or extra is not None:
        given = sum(1 for k, v in row.items() if k is not None and v is not None) + len(extra or [])
        source.rejected.append(Problem(str(ref or ""), str(subject or ""), "malformed_row",
                                       f"{given} field(s), the header has {width}", line))
        return
    if not ref:
        source.rejected.append(Problem("", subject, Reason.MISSING_IMAGE_PATH, "image_path is empty", line))
        return
    path = Path(ref) if Path(ref).is_absolute() else manifest.parent / ref
    found = classify(path, ref)
    if found.reason is not None:
        source.rejected.append(Problem(ref, subject, found.reason.value, f"{found.detail} ({path})", line))
        return
    meta = {k: v for k, v in row.items() if isinstance(k, str) and k not in REQUIRED_COLUMNS and isinstance(v, str)
            and v != ""}
    source.items.append(EnrolItem(subject, path, ref, meta, line))


def scan_source(source: Path) -> EnrolSource:
    """A folder per subject, or a ``.csv`` manifest."""
    return scan_manifest(source) if source.suffix.lower() == ".csv" else scan_folder(source)


def _items_logging_the_rest(source: EnrolSource, where: Path) -> list[EnrolItem]:
    if source.skipped or source.rejected:
        reasons: dict[str, int] = {}
        for p in (*source.skipped, *source.rejected):
            reasons[p.reason] = reasons.get(p.reason, 0) + 1
        logger.warning("%d file(s) or row(s) of %s will not be enrolled: %s", len(source.skipped) +
                       len(source.rejected), where, reasons)
    return source.items


def items_from_folder(root: Path) -> list[EnrolItem]:
    """The items of :func:`scan_folder` only (what is skipped is logged as a warning, with counts by reason)."""
    return _items_logging_the_rest(scan_folder(root), root)


def items_from_manifest(manifest: Path) -> list[EnrolItem]:
    """The items of :func:`scan_manifest` only (rejected rows are logged as a warning, with counts by reason)."""
    return _items_logging_the_rest(scan_manifest(manifest), manifest)


def items_from(source: Path) -> list[EnrolItem]:
    """The items of :func:`scan_source` only (what will not be enrolled is logged as a warning)."""
    return _items_logging_the_rest(scan_source(source), source)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def shared_photos(items: Sequence[EnrolItem]) -> dict[str, dict[str, str]]:
    """sha256 -> {subject id: first source ref} for the photos given (byte for byte) under several valid ids."""
    owners: dict[str, dict[str, str]] = {}
    for item in items:
        if not is_subject_id(item.subject_id):
            continue  # rejected as invalid_subject_id when read
        try:
            digest = _file_sha256(item.path)
        except OSError:
            continue  # rejected as unreadable when read
        owners.setdefault(digest, {}).setdefault(item.subject_id, item.source_ref)
    return {d: o for d, o in owners.items() if len(o) > 1}
