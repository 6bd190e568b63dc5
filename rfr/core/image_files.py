"""Which files under a folder are images RFR can take, decided by content: one rule for every folder command.

A file is an image when :func:`rfr.core.image_headers.sniff_format` names the format of its first
:data:`SNIFF_BYTES` bytes, whatever its name (``x.jfif``, ``y.jpe`` and ``photo.JPG`` alike); any other content
is ``unsupported_format``, named by :func:`rfr.core.image_headers.describe_unsupported` (``a GIF image (starts 47 49
46 ...)``). Nothing is dropped: every entry that is not an image is *skipped with a reason*, and the callers
(``rfr submit``, ``rfr enrol``) print one line per file and count each reason.

Walking rules (:func:`walk`):

- sub-folders are walked recursively, in name order; what a caller does with a nested file is its own rule
  (``rfr enrol`` reports files in a sub-folder of a subject folder as ``nested_folder``);
- hidden entries (a name starting with ``.``, ``Thumbs.db``, ``desktop.ini``) are skipped as ``hidden``; a hidden
  folder is one skipped entry and is not walked (``.git``, ``.Trash`` would flood the report);
- symbolic links are followed, to files and to folders; a link whose target is missing is ``broken_symlink``, a
  link to a folder that contains it is ``symlink_loop`` (reported once, not walked);
- anything that is not a regular file (FIFO, socket, device) is ``not_a_regular_file``; it is never opened;
- an empty file is ``empty``; a file or folder that cannot be read is ``unreadable`` (with the OS reason).
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath

from rfr.core.image_headers import describe_unsupported, sniff_format

logger = logging.getLogger(__name__)

# Enough for every magic number sniff_format reads (HEIF's ftyp box with its brands needs the most).
SNIFF_BYTES = 64
HIDDEN_NAMES = frozenset({"thumbs.db", "desktop.ini"})

class SkipReason(StrEnum):
    UNSUPPORTED_FORMAT = "unsupported_format"
    EMPTY = "empty"
    HIDDEN = "hidden"
    BROKEN_SYMLINK = "broken_symlink"
    SYMLINK_LOOP = "symlink_loop"
    NOT_A_REGULAR_FILE = "not_a_regular_file"
    MISSING = "missing"
    UNREADABLE = "unreadable"
    SAME_FILE = "same_file"  # reached a second time (given twice, or by a link): listed once, where first met


@dataclass(frozen=True)
class FoundFile:
    """One entry met while scanning: an image (``format`` set) or a skipped entry (``reason`` and ``detail``).

    ``rel`` is the path relative to the folder walked (POSIX separators); a file given directly has its name.
    """

    path: Path
    rel: str
    format: str | None = None
    reason: SkipReason | None = None
    detail: str = ""

    @property
    def is_image(self) -> bool:
        return self.format is not None


def classify(path: Path, rel: str | None = None) -> FoundFile:
    """Decide one file by its first :data:`SNIFF_BYTES` bytes; follows symbolic links; never raises ``OSError``."""
    rel = path.name if rel is None else rel
    try:
        info = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            return FoundFile(path, rel, None, SkipReason.BROKEN_SYMLINK, f"link to missing {os.readlink(path)}")
        return FoundFile(path, rel, None, SkipReason.MISSING, "no such file")
    except OSError as exc:
        return FoundFile(path, rel, None, SkipReason.UNREADABLE, exc.strerror or str(exc))
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "a FIFO, socket or device"
        return FoundFile(path, rel, None, SkipReason.NOT_A_REGULAR_FILE, f"{kind}, not a file")
    try:
        with path.open("rb") as fh:
            head = fh.read(SNIFF_BYTES)
    except OSError as exc:
        return FoundFile(path, rel, None, SkipReason.UNREADABLE, exc.strerror or str(exc))
    if not head:
        return FoundFile(path, rel, None, SkipReason.EMPTY, "0 bytes")
    fmt = sniff_format(head)
    if fmt is None:
        return FoundFile(path, rel, None, SkipReason.UNSUPPORTED_FORMAT, describe_unsupported(head))
    return FoundFile(path, rel, fmt)


def is_hidden(name: str) -> bool:
    """Dot-files and folders, and the files Windows and macOS drop beside photos."""
    return name.startswith(".") or name.lower() in HIDDEN_NAMES


def walk(root: Path) -> list[FoundFile]:
    """Every entry under ``root`` (recursive, name order): each image and each skipped entry with its reason."""
    out: list[FoundFile] = []
    _walk(root, PurePosixPath(), {os.path.realpath(root)}, out)
    return out


def _walk(folder: Path, rel: PurePosixPath, ancestors: set[str], out: list[FoundFile]) -> None:
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        out.append(FoundFile(folder, rel.as_posix(), None, SkipReason.UNREADABLE,
                             f"cannot list folder: {exc.strerror or exc}"))
        return
    for entry in entries:
        path, sub = Path(entry.path), rel / entry.name
        is_dir = entry.is_dir()  # follows symbolic links
        if is_hidden(entry.name):
            what = "hidden folder, not walked" if is_dir else "hidden file"
            out.append(FoundFile(path, sub.as_posix(), None, SkipReason.HIDDEN, what))
        elif is_dir:
            real = os.path.realpath(path)
            if real in ancestors:
                out.append(FoundFile(path, sub.as_posix(), None, SkipReason.SYMLINK_LOOP,
                                     f"link to {real}, a folder that contains it; not walked"))
            else:
                _walk(path, sub, {*ancestors, real}, out)
        else:
            out.append(classify(path, sub.as_posix()))


def scan(paths: Iterable[Path]) -> list[FoundFile]:
    """Files as given and everything under each folder given, in that order.

    A file reached a second time (given twice, or through a link) comes back as ``same_file`` naming where it was
    first met. Raises ``FileNotFoundError`` for a path given that does not exist (a usage error, not a skip).
    """
    out: list[FoundFile] = []
    seen: dict[str, Path] = {}
    for path in paths:
        if path.is_dir():
            found = walk(path)
        elif path.exists() or path.is_symlink():
            found = [classify(path)]
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
        for f in found:
            if f.reason in (SkipReason.BROKEN_SYMLINK, SkipReason.SYMLINK_LOOP):
                out.append(f)  # a link, not the file or folder it names
                continue
            key = os.path.realpath(f.path)
            first = seen.setdefault(key, f.path)
            if first is f.path:
                out.append(f)
            else:
                out.append(FoundFile(f.path, f.rel, None, SkipReason.SAME_FILE, f"same file as {first}"))
    return out


def count_reasons(found: Sequence[FoundFile]) -> dict[str, int]:
    """Skipped entries per reason, sorted by reason."""
    counts: dict[str, int] = {}
    for f in found:
        if f.reason is not None:
            counts[f.reason.value] = counts.get(f.reason.value, 0) + 1
    return dict(sorted(counts.items()))


def identity_folders(root: Path) -> dict[str, list[Path]]:
    """``root/<identity>/<photo>`` -> {identity: its photos}, both sorted by name; the one folder-per-identity
    listing (evaluation sets, calibration data, the demo's faces, model samples).

    Photos are decided by content (:func:`classify`); hidden folders and identities without a photo are left out,
    and every other entry that is not a photo is counted in one log line. Raises ``FileNotFoundError`` when
    ``root`` is not a folder.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"no such folder: {root}")
    found: dict[str, list[Path]] = {}
    skipped: list[FoundFile] = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not is_hidden(p.name)):
        entries = [classify(p, f"{sub.name}/{p.name}") for p in sorted(sub.iterdir()) if not p.is_dir()]
        photos = [f.path for f in entries if f.is_image]
        skipped += [f for f in entries if not f.is_image]
        if photos:
            found[sub.name] = photos
    if skipped:
        logger.info("%s: %d entries are not photos and were left out (%s)", root, len(skipped),
                    ", ".join(f"{r} {n}" for r, n in count_reasons(skipped).items()))
    return found
