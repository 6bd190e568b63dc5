"""Enrolment: labelled mugshots into the gallery, through the probes' decode/detect/align/embed path.

Sources (:mod:`rfr.gallery.enrol_sources`): a folder per subject (``DIR/<subject_id>/<photo>``) or a CSV
manifest (``subject_id,image_path[,metadata...]``). Every file and row ends in the report exactly once:
``enrolled``, ``already_enrolled`` (on the watch-list, or the same bytes twice for one subject), ``skipped`` (not a
photo to enrol: unsupported format by content, hidden, nested folder, ...) or ``rejected`` (with its reason:
invalid subject id, no face, shared photo, ...); a ``warning`` may come on top of ``enrolled``. Several photos
per subject are kept, one face each (see :mod:`rfr.gallery.extraction` for photos with several faces).

One photo, one person: the same photo under two subject ids would put both on every candidate list it matches.
Refused (``shared_photo``) unless ``allow_shared_photo`` (then enrolled with a ``shared_photo`` warning):

- the same bytes (sha256) given for two subject ids in one run: every copy is refused, each naming the others
  (a copy already enrolled stays there and counts as ``already_enrolled``);
- a photo whose embedding is near-identical (cosine >= :data:`SAME_PHOTO_COSINE`) to one of another subject,
  already on the same watch-list or earlier in the same batch: the newcomer is refused. The gallery does not store
  the photo's sha256 (the face id hashes it with the subject), so this is how a photo enrolled in an earlier
  run is recognised; it also catches most re-saved copies.

Resumable: a face's id is derived from (watch-list, subject, sha256 of the image bytes), so a photo already on
the watch-list is skipped without decoding it, and a re-run after an interruption enrols only what is missing.
Embedding calls are batched (``batch_size`` photos per call).

Photos are kept: with a blob store (``photos``; ``rfr enrol``: ``<blob_dir>/gallery``, apart from the stills),
each enrolled photo's bytes are stored content-addressed (``sha256:<hex>``) before its face enters the gallery, so
that reviewers can see a candidate beside the probe. The report lists the photos enrolled in the run
(``EnrolReport.faces``: ids, photo reference, template) for :func:`rfr.gallery.changes.gallery_changes` to tell
the review service. With ``embed_existing``, photos already on the watch-list are decoded and embedded again (not
written to the gallery again; the pipeline is deterministic, so the template is the one enrolled) and listed too,
marked ``existing``: for announcing an earlier enrolment.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from rfr.core.blobstore import BlobStore
from rfr.core.reasons import Reason
from rfr.embedding.protocol import Embedder
from rfr.gallery.base import (
    MAX_METADATA,
    Gallery,
    GalleryFace,
    check_subject_id,
    check_watch_list_name,
    enrol_face_id,
    normalise,
)
from rfr.gallery.enrol_sources import (
    REQUIRED_COLUMNS,
    EnrolItem,
    EnrolSource,
    Problem,
    items_from,
    items_from_folder,
    items_from_manifest,
    scan_folder,
    scan_manifest,
    scan_source,
    shared_photos,
)
from rfr.gallery.extraction import (
    Crop,
    ExtractionRejected,
    FaceExtractor,
    MultiFacePolicy,
    choose_face,
    embed_crops,
)

__all__ = ["REQUIRED_COLUMNS", "EnrolItem", "EnrolReport", "EnrolSource", "EnrolledFace", "Enroller", "Problem",
           "items_from", "items_from_folder", "items_from_manifest", "scan_folder", "scan_manifest", "scan_source",
           "shared_photos"]

logger = logging.getLogger(__name__)


# Cosine at or above which two gallery photos are taken to be the same photo. Measured with this pipeline on LFW
# (../shared/faces/lfw, the 232 identities with >= 4 photos, 1291 photos): the same bytes embedded in another
# batch >= 0.9999998; a JPEG quality-95 re-save: median 0.998, 1st percentile 0.992; two different photos of one
# person: at most 0.953 over 3437 pairs (99.9th percentile 0.934).
SAME_PHOTO_COSINE = 0.99
SAME_PHOTO_TOP_K = 3  # subjects asked of the gallery per photo: its own subject may hold the best hit


@dataclass(frozen=True)
class EnrolledFace:
    """One photo on the watch-list after a run: ``vector`` is its float32 template (dim,) as embedded;
    ``photo_ref`` its blob reference (None without a blob store); ``existing``: it was enrolled before this run
    (listed only with ``embed_existing``)."""

    face_id: str
    subject_id: str
    watch_list: str
    photo_ref: str | None
    source_ref: str
    vector: npt.NDArray[np.float32]
    existing: bool = False


@dataclass
class EnrolReport:
    """Counts and per-file outcomes of one enrolment run (``files`` = enrolled + already + skipped + rejected)."""

    watch_list: str
    model_id: str
    images: int = 0
    enrolled: int = 0
    skipped_existing: int = 0
    rejected: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    skipped: list[Problem] = field(default_factory=list)
    done: list[Problem] = field(default_factory=list)  # reason "enrolled" or "already_enrolled", one per file
    subjects: set[str] = field(default_factory=set)
    seconds: float = 0.0
    faces: list[EnrolledFace] = field(default_factory=list)  # enrolled now (and existing, with embed_existing)

    @property
    def files(self) -> int:
        return self.enrolled + self.skipped_existing + len(self.rejected) + len(self.skipped)

    def reasons(self) -> dict[str, int]:
        return _count(self.rejected)

    def to_dict(self) -> dict[str, Any]:
        return {
            "watch_list": self.watch_list, "model_id": self.model_id, "files": self.files, "images": self.images,
            "enrolled": self.enrolled, "skipped_existing": self.skipped_existing, "skipped": len(self.skipped),
            "skipped_by_reason": _count(self.skipped), "rejected": len(self.rejected),
            "rejected_by_reason": self.reasons(), "warnings": len(self.warnings),
            "subjects_enrolled": len(self.subjects), "photos_kept": sum(1 for f in self.faces if f.photo_ref),
            "seconds": round(self.seconds, 3),
            "images_per_s": round(self.images / self.seconds, 2) if self.seconds > 0 else None,
            "rejections": [asdict(p) for p in self.rejected], "warning_list": [asdict(p) for p in self.warnings],
            "skips": [asdict(p) for p in self.skipped], "done_list": [asdict(p) for p in self.done],
        }


def _count(problems: Sequence[Problem]) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in problems:
        out[str(p.reason)] = out.get(str(p.reason), 0) + 1  # the plain value, also for a Reason
    return dict(sorted(out.items()))


def _problem(item: EnrolItem, reason: str, detail: str = "") -> Problem:
    return Problem(item.source_ref, item.subject_id, reason, detail, item.line)


@dataclass
class _Pending:
    item: EnrolItem
    face_id: str
    sha256: str
    data: bytes
    metadata: str
    shared: bool = False  # the same bytes are given for another subject in this run (already reported)


@dataclass
class _Kept:
    pending: _Pending
    crop: Crop
    existing: bool = False  # already on the watch-list: embedded again to be listed, not written again


class Enroller:
    """Runs items through extraction and embedding onto one watch-list of a gallery (one embedding call per
    batch). ``photos``: where each enrolled photo's bytes are kept (``OSError`` from it stops the run before the
    face enters the gallery); ``embed_existing``: list photos already enrolled in the report as well."""

    def __init__(self, extractor: FaceExtractor, embedder: Embedder, gallery: Gallery, watch_list: str, *,
                 multi_face: MultiFacePolicy = "largest", batch_size: int = 32,
                 allow_shared_photo: bool = False, photos: BlobStore | None = None,
                 embed_existing: bool = False) -> None:
        if embedder.model_id != gallery.model_id:
            raise ValueError(f"embedder model {embedder.model_id!r} but gallery model {gallery.model_id!r}")
        self.extractor = extractor
        self.embedder = embedder
        self.gallery = gallery
        self.watch_list = check_watch_list_name(watch_list)
        self.multi_face = multi_face
        self.batch_size = batch_size
        self.allow_shared_photo = allow_shared_photo
        self.photos = photos
        self.embed_existing = embed_existing
        self._shared: dict[str, dict[str, str]] = {}

    def run_source(self, source: EnrolSource, progress: Callable[[int], None] | None = None) -> EnrolReport:
        """:meth:`run` on the source's items; its skipped files and rejected rows join the report."""
        report = self.run(source.items, progress)
        report.skipped = [*source.skipped, *report.skipped]
        report.rejected = [*source.rejected, *report.rejected]
        return report

    def run(self, items: Sequence[EnrolItem], progress: Callable[[int], None] | None = None) -> EnrolReport:
        """Enrol ``items`` (``batch_size`` per embedding call); ``progress`` gets the number of items done."""
        report = EnrolReport(watch_list=self.watch_list, model_id=self.embedder.model_id)
        started = time.perf_counter()
        logger.info("hashing %d photo(s) to find one photo given for several subjects", len(items))
        self._shared = shared_photos(items)
        seen: dict[str, str] = {}
        for chunk in _chunks(items, self.batch_size):
            self._run_chunk(chunk, report, seen)
            report.images += len(chunk)
            if progress:
                progress(len(chunk))
        self.gallery.flush()
        report.seconds = time.perf_counter() - started
        logger.info("enrolment onto watch-list %s: %d images, %d enrolled, %d already there, %d rejected %s",
                    self.watch_list, report.images, report.enrolled, report.skipped_existing, len(report.rejected),
                    report.reasons())
        return report

    def _run_chunk(self, chunk: Sequence[EnrolItem], report: EnrolReport, seen: dict[str, str]) -> None:
        fresh: list[_Pending] = []
        for p in (self._read(item, report) for item in chunk):
            if p is not None and p.face_id in seen:
                report.skipped_existing += 1
                report.done.append(_problem(p.item, "already_enrolled", f"same bytes as {seen[p.face_id]}"))
            elif p is not None:
                seen[p.face_id] = p.item.source_ref
                fresh.append(p)
        existing = self.gallery.existing_face_ids([p.face_id for p in fresh])
        kept: list[_Kept] = []
        for p in fresh:
            if p.face_id in existing:
                report.skipped_existing += 1
                report.done.append(_problem(p.item, "already_enrolled", f"on watch-list {self.watch_list}"))
                crop = self._extract_existing(p, report) if self.embed_existing else None
                if crop is not None:
                    kept.append(_Kept(p, crop, existing=True))
            elif self._shared_ok(p, report):
                crop = self._extract(p, report)
                if crop is not None:
                    kept.append(_Kept(p, crop))
        if kept:
            self._embed_and_add(kept, report)

    def _shared_ok(self, p: _Pending, report: EnrolReport) -> bool:
        """False (rejected) when the same bytes are given for another subject in this run."""
        others = {s: r for s, r in self._shared.get(p.sha256, {}).items() if s != p.item.subject_id}
        if not others:
            return True
        p.shared = True
        named = ", ".join(f"{s} ({r})" for s, r in sorted(others.items()))
        return self._shared_photo(p.item, f"the same bytes are given for subject(s) {named}", report)

    def _shared_photo(self, item: EnrolItem, detail: str, report: EnrolReport) -> bool:
        if self.allow_shared_photo:
            report.warnings.append(_problem(item, Reason.SHARED_PHOTO, detail + "; enrolled (--allow-shared-photo)"))
            return True
        report.rejected.append(_problem(item, Reason.SHARED_PHOTO, detail + "; one photo is one person: fix the "
                                        "labels, or allow it explicitly (--allow-shared-photo)"))
        return False

    def _extract(self, p: _Pending, report: EnrolReport) -> Crop | None:
        try:
            choice = choose_face(self.extractor.extract(p.data), self.multi_face)
        except ExtractionRejected as exc:
            report.rejected.append(_problem(p.item, exc.reason, exc.detail))
            return None
        if choice.warning:
            report.warnings.append(_problem(p.item, Reason.MULTIPLE_FACES, choice.warning))
        return choice.face.crop

    def _extract_existing(self, p: _Pending, report: EnrolReport) -> Crop | None:
        """The crop of a photo already enrolled (its largest face: the one either policy enrolled), or None with
        a ``not_listed`` warning; the file stays counted as already enrolled."""
        try:
            return choose_face(self.extractor.extract(p.data), "largest").face.crop
        except ExtractionRejected as exc:
            report.warnings.append(_problem(p.item, "not_listed", f"already enrolled, but no face to embed again "
                                            f"now ({exc.reason}: {exc.detail}); not announced"))
            return None

    def _embed_and_add(self, kept: list[_Kept], report: EnrolReport) -> None:
        vectors = embed_crops(self.embedder, [k.crop for k in kept])
        new = [i for i, k in enumerate(kept) if not k.existing]
        twins = dict(zip(new, self._twins([kept[i].pending.item for i in new], vectors[new]), strict=True)
                     ) if new else {}
        listed: list[EnrolledFace] = []
        for i, k in enumerate(kept):
            twin = twins.get(i)
            if twin is not None and not k.pending.shared and not self._shared_photo(k.pending.item, twin, report):
                continue
            listed.append(self._listed(k, vectors[i]))  # the photo is kept before its face enters the gallery
        metadata = {k.pending.face_id: k.pending.metadata for k in kept}
        faces = [GalleryFace(face_id=f.face_id, subject_id=f.subject_id, watch_list=self.watch_list, vector=f.vector,
                             source_ref=f.source_ref, metadata=metadata[f.face_id]) for f in listed if not f.existing]
        if faces:
            report.enrolled += self.gallery.add(faces)
            report.subjects.update(f.subject_id for f in faces)
            by_id = {k.pending.face_id: k.pending.item for k in kept}
            report.done.extend(_problem(by_id[f.face_id], "enrolled", f"subject {f.subject_id}") for f in faces)
        report.faces.extend(listed)

    def _listed(self, kept: _Kept, vector: npt.NDArray[np.float32]) -> EnrolledFace:
        """The report's record of one photo, its bytes put in the blob store (when there is one)."""
        p = kept.pending
        ref = self.photos.put(p.data) if self.photos is not None else None
        return EnrolledFace(face_id=p.face_id, subject_id=p.item.subject_id, watch_list=self.watch_list,
                            photo_ref=ref, source_ref=p.item.source_ref,
                            vector=np.asarray(vector, dtype=np.float32), existing=kept.existing)

    def _twins(self, items: Sequence[EnrolItem], vectors: npt.NDArray[np.float32]) -> list[str | None]:
        """Per photo: the other subject it is near-identical to (gallery, or earlier in this batch), or None."""
        hits = self.gallery.search(vectors, SAME_PHOTO_TOP_K, [self.watch_list], SAME_PHOTO_COSINE)
        unit = normalise(vectors)
        sims = unit @ unit.T
        out: list[str | None] = []
        for i, item in enumerate(items):
            hit = next((h for h in hits[i] if h.subject_id != item.subject_id), None)
            if hit is not None:
                out.append(f"near-identical (cosine {hit.score:.4f} >= {SAME_PHOTO_COSINE}) to {hit.source_ref} of "
                           f"subject {hit.subject_id}, already on watch-list {self.watch_list}")
                continue
            j = next((j for j in range(i) if sims[i, j] >= SAME_PHOTO_COSINE
                      and items[j].subject_id != item.subject_id), None)
            out.append(None if j is None else f"near-identical (cosine {sims[i, j]:.4f} >= {SAME_PHOTO_COSINE}) "
                       f"to {items[j].source_ref} of subject {items[j].subject_id}, in this run")
        return out

    def _read(self, item: EnrolItem, report: EnrolReport) -> _Pending | None:
        try:
            check_subject_id(item.subject_id)
        except ValueError as exc:
            report.rejected.append(_problem(item, Reason.INVALID_SUBJECT_ID, str(exc)))
            return None
        metadata = json.dumps(item.metadata, separators=(",", ":"), sort_keys=True) if item.metadata else ""
        if len(metadata) > MAX_METADATA:
            report.rejected.append(_problem(item, Reason.METADATA_TOO_LONG,
                                            f"{len(metadata)} characters of JSON, at most {MAX_METADATA}"))
            return None
        try:
            data = item.path.read_bytes()
        except OSError as exc:
            report.rejected.append(_problem(item, "unreadable", str(exc)))
            return None
        sha = hashlib.sha256(data).hexdigest()
        return _Pending(item, enrol_face_id(self.watch_list, item.subject_id, sha), sha, data, metadata)


def _chunks(items: Sequence[EnrolItem], size: int) -> Iterator[Sequence[EnrolItem]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
