"""Enrolment: labelled mugshots into the gallery, through the probes' decode/detect/align/embed path.

Sources: a folder per subject (``DIR/<subject_id>/*.jpg``) or a CSV manifest with columns ``subject_id``,
``image_path`` (relative to the manifest's folder, or absolute) and any further columns, kept as the face's
metadata. Several photos per subject are kept, one face each (see :mod:`services.match.pipeline` for photos
with several faces).

Resumable: a face's id is derived from (gallery, subject, sha256 of the image bytes), so a photo already in
the gallery is skipped without decoding it, and a re-run after an interruption enrols only what is missing.
Embedding calls are batched (``batch_size`` photos per call).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from services.match.gallery import (
    MAX_METADATA,
    Gallery,
    GalleryFace,
    check_gallery_name,
    check_subject_id,
    enrol_face_id,
)
from services.match.pipeline import (
    Crop,
    Embedder,
    ExtractionRejected,
    FaceExtractor,
    MultiFacePolicy,
    choose_face,
    embed_crops,
)

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
REQUIRED_COLUMNS = ("subject_id", "image_path")


@dataclass(frozen=True)
class EnrolItem:
    subject_id: str
    path: Path
    source_ref: str
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Problem:
    source_ref: str
    subject_id: str
    reason: str
    detail: str = ""


@dataclass
class EnrolReport:
    gallery: str
    model_id: str
    images: int = 0
    enrolled: int = 0
    skipped_existing: int = 0
    rejected: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    subjects: set[str] = field(default_factory=set)
    seconds: float = 0.0

    def reasons(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.rejected:
            out[p.reason] = out.get(p.reason, 0) + 1
        return dict(sorted(out.items()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "gallery": self.gallery, "model_id": self.model_id, "images": self.images, "enrolled": self.enrolled,
            "skipped_existing": self.skipped_existing, "rejected": len(self.rejected),
            "rejected_by_reason": self.reasons(), "warnings": len(self.warnings),
            "subjects_enrolled": len(self.subjects), "seconds": round(self.seconds, 3),
            "images_per_s": round(self.images / self.seconds, 2) if self.seconds > 0 else None,
            "rejections": [asdict(p) for p in self.rejected], "warning_list": [asdict(p) for p in self.warnings],
        }


def items_from_folder(root: Path) -> list[EnrolItem]:
    """``root/<subject_id>/<image>`` for every image file, sorted by subject then file name."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    items = []
    for subject_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for image in sorted(p for p in subject_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
            items.append(EnrolItem(subject_dir.name, image, image.relative_to(root).as_posix()))
    return items


def items_from_manifest(manifest: Path) -> list[EnrolItem]:
    """Rows of a CSV manifest (header ``subject_id,image_path[,metadata...]``)."""
    with manifest.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{manifest}: missing column(s) {', '.join(missing)} (header: {reader.fieldnames})")
        items = []
        for row in reader:
            ref = (row.get("image_path") or "").strip()
            path = Path(ref) if Path(ref).is_absolute() else manifest.parent / ref
            meta = {k: v for k, v in row.items() if k not in REQUIRED_COLUMNS and k and v not in (None, "")}
            items.append(EnrolItem((row.get("subject_id") or "").strip(), path, ref, meta))
    return items


def items_from(source: Path) -> list[EnrolItem]:
    """A folder per subject, or a ``.csv`` manifest."""
    return items_from_manifest(source) if source.suffix.lower() == ".csv" else items_from_folder(source)


@dataclass
class _Pending:
    item: EnrolItem
    face_id: str
    data: bytes
    metadata: str


class Enroller:
    """Runs items through extraction and embedding into a gallery (one embedding call per batch)."""

    def __init__(self, extractor: FaceExtractor, embedder: Embedder, gallery: Gallery, gallery_name: str, *,
                 multi_face: MultiFacePolicy = "largest", batch_size: int = 32) -> None:
        if embedder.model_id != gallery.model_id:
            raise ValueError(f"embedder model {embedder.model_id!r} but gallery model {gallery.model_id!r}")
        self.extractor = extractor
        self.embedder = embedder
        self.gallery = gallery
        self.gallery_name = check_gallery_name(gallery_name)
        self.multi_face = multi_face
        self.batch_size = batch_size

    def run(self, items: Sequence[EnrolItem], progress: Callable[[int], None] | None = None) -> EnrolReport:
        report = EnrolReport(gallery=self.gallery_name, model_id=self.embedder.model_id)
        started = time.perf_counter()
        seen: set[str] = set()
        for chunk in _chunks(items, self.batch_size):
            self._run_chunk(chunk, report, seen)
            report.images += len(chunk)
            if progress:
                progress(len(chunk))
        self.gallery.flush()
        report.seconds = time.perf_counter() - started
        logger.info("enrolment into %s: %d images, %d enrolled, %d already there, %d rejected %s",
                    self.gallery_name, report.images, report.enrolled, report.skipped_existing, len(report.rejected),
                    report.reasons())
        return report

    def _run_chunk(self, chunk: Sequence[EnrolItem], report: EnrolReport, seen: set[str]) -> None:
        fresh: list[_Pending] = []
        for p in (self._read(item, report) for item in chunk):
            if p is not None and p.face_id in seen:
                report.skipped_existing += 1  # the same photo twice for one subject
            elif p is not None:
                seen.add(p.face_id)
                fresh.append(p)
        existing = self.gallery.existing_face_ids([p.face_id for p in fresh])
        report.skipped_existing += len(existing)
        kept: list[tuple[_Pending, Crop]] = []
        for p in fresh:
            if p.face_id in existing:
                continue
            try:
                choice = choose_face(self.extractor.extract(p.data), self.multi_face)
            except ExtractionRejected as exc:
                report.rejected.append(Problem(p.item.source_ref, p.item.subject_id, exc.reason, exc.detail))
                continue
            if choice.warning:
                report.warnings.append(Problem(p.item.source_ref, p.item.subject_id, "multiple_faces", choice.warning))
            kept.append((p, choice.face.crop))
        if not kept:
            return
        vectors = embed_crops(self.embedder, [crop for _, crop in kept])
        faces = [
            GalleryFace(face_id=p.face_id, subject_id=p.item.subject_id, gallery=self.gallery_name, vector=v,
                        source_ref=p.item.source_ref, metadata=p.metadata)
            for (p, _), v in zip(kept, vectors, strict=True)
        ]
        report.enrolled += self.gallery.add(faces)
        report.subjects.update(f.subject_id for f in faces)

    def _read(self, item: EnrolItem, report: EnrolReport) -> _Pending | None:
        try:
            check_subject_id(item.subject_id)
        except ValueError as exc:
            report.rejected.append(Problem(item.source_ref, item.subject_id, "invalid_subject_id", str(exc)))
            return None
        metadata = json.dumps(item.metadata, separators=(",", ":"), sort_keys=True) if item.metadata else ""
        if len(metadata) > MAX_METADATA:
            report.rejected.append(Problem(item.source_ref, item.subject_id, "metadata_too_long",
                                           f"{len(metadata)} characters of JSON, at most {MAX_METADATA}"))
            return None
        try:
            data = item.path.read_bytes()
        except OSError as exc:
            report.rejected.append(Problem(item.source_ref, item.subject_id, "unreadable", str(exc)))
            return None
        face_id = enrol_face_id(self.gallery_name, item.subject_id, hashlib.sha256(data).hexdigest())
        return _Pending(item, face_id, data, metadata)


def _chunks(items: Sequence[EnrolItem], size: int) -> Iterator[Sequence[EnrolItem]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
