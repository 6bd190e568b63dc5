"""The gallery: enrolled face embeddings, searched for candidates per subject.

Everything in here is storage-agnostic: the :class:`Gallery` protocol, the records it holds, the errors it raises
and the per-subject ranking. :mod:`rfr.gallery.milvus` implements it on Milvus (milvus-lite server or
a cluster, by URI); :mod:`rfr.gallery.memory` is an exact in-memory one for tests and small tools.

Scores are cosine similarities in [-1, 1]; a candidate is a *subject* (several photos per subject: the best
photo's score counts), never an identification.

The gallery holds every enrolled photo of one embedding model; it is divided into named *watch-lists* (e.g.
``custody``), and a search names the watch-lists it covers. A subject may be enrolled on several watch-lists.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from rfr.core.ids import IDENT_PATTERN, is_ident

Vectors = npt.NDArray[np.float32]
H = TypeVar("H")

WATCH_LIST_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")
MAX_SOURCE_REF = 1024
MAX_METADATA = 4096


class GalleryError(RuntimeError):
    """Base class of gallery failures."""


class GalleryMismatchError(GalleryError):
    """The stored collection was made for another embedding model or dimension; vectors must never mix."""


class GalleryUnavailableError(GalleryError):
    """The vector store could not be reached or failed; the caller may retry later."""


@dataclass(frozen=True)
class GalleryFace:
    """One enrolled photo of a subject."""

    face_id: str
    subject_id: str
    watch_list: str
    vector: Vectors
    source_ref: str = ""
    enrolled_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    metadata: str = ""  # JSON text (e.g. the extra columns of an enrolment manifest)


@dataclass(frozen=True)
class FaceHit:
    """One gallery photo returned by a vector search (before aggregation per subject)."""

    face_id: str
    subject_id: str
    watch_list: str
    score: float
    source_ref: str = ""


@dataclass(frozen=True)
class SubjectHit:
    """A candidate subject: its best-scoring photo."""

    subject_id: str
    watch_list: str
    score: float
    face_id: str
    source_ref: str = ""


@dataclass(frozen=True)
class SubjectSummary:
    subject_id: str
    watch_list: str
    faces: int


class Gallery(Protocol):
    """Enrolled faces of one embedding model (``model_id``), on one or more named watch-lists."""

    @property
    def model_id(self) -> str: ...

    def dim(self) -> int | None:
        """Vector dimension, or None while nothing was ever enrolled for this model."""
        ...

    def add(self, faces: Sequence[GalleryFace]) -> int:
        """Insert or replace (same ``face_id``) these faces; returns how many were written."""
        ...

    def search(
        self, vectors: Vectors, top_k: int, watch_lists: Sequence[str], threshold: float
    ) -> list[list[SubjectHit]]:
        """For each query row of ``vectors`` (n, dim) float32: up to ``top_k`` subjects enrolled on
        ``watch_lists`` scoring >= ``threshold`` (inclusive: a score equal to it is a candidate), best first."""
        ...

    def existing_face_ids(self, face_ids: Sequence[str]) -> set[str]:
        """The subset of ``face_ids`` already stored."""
        ...

    def face_vectors(self, face_ids: Sequence[str]) -> dict[str, Vectors]:
        """The stored vector (D,) float32, unit length, of each of ``face_ids`` the gallery holds (the others are
        left out): what :mod:`rfr.gallery.hubness` reads once per photo."""
        ...

    def subject_faces(self, subject_id: str, watch_lists: Sequence[str] | None = None) -> list[tuple[str, str]]:
        """Every photo of ``subject_id`` (on ``watch_lists``, default all) as ``(face_id, watch_list)``, sorted:
        what :meth:`delete_subject` would erase (read first, to tell the review service which faces go)."""
        ...

    def delete_subject(self, subject_id: str, watch_lists: Sequence[str] | None = None) -> int:
        """Erase every photo of ``subject_id`` (on ``watch_lists``, default all); returns how many were erased."""
        ...

    def count(self, watch_lists: Sequence[str] | None = None) -> int:
        """Number of enrolled photos (on ``watch_lists``, default all)."""
        ...

    def list_subjects(self, watch_lists: Sequence[str] | None = None) -> list[SubjectSummary]:
        """Every enrolled subject with its photo count per watch-list, sorted by watch-list then subject id."""
        ...

    def flush(self) -> None:
        """Make what was added durable and indexed (a no-op where that happens anyway)."""
        ...


def check_watch_list_name(name: str) -> str:
    """``name`` unchanged, or ``ValueError`` unless it matches :data:`WATCH_LIST_NAME`."""
    if not WATCH_LIST_NAME.fullmatch(name):  # fullmatch: "$" alone would let a trailing newline through
        raise ValueError(f"watch-list name {name!r} must match {WATCH_LIST_NAME.pattern}")
    return name


def is_subject_id(subject_id: str) -> bool:
    """Whether ``subject_id`` is valid as written: nothing is stripped or repaired."""
    return is_ident(subject_id)


def check_subject_id(subject_id: str) -> str:
    """``subject_id`` unchanged, or ``ValueError`` saying why (surrounding white space is named as such)."""
    if not is_subject_id(subject_id):
        hint = " (it has leading or trailing white space)" if subject_id != subject_id.strip() else ""
        raise ValueError(f"subject id {subject_id!r} must match {IDENT_PATTERN}{hint}")
    return subject_id


def check_face(face: GalleryFace, dim: int | None) -> None:
    """Raise ``ValueError`` for a face that cannot be stored (:class:`GalleryMismatchError`: wrong dimension)."""
    check_watch_list_name(face.watch_list)
    check_subject_id(face.subject_id)
    if not face.face_id or len(face.face_id) > 128:
        raise ValueError(f"face id {face.face_id!r} must have 1 to 128 characters")
    if len(face.source_ref) > MAX_SOURCE_REF or len(face.metadata) > MAX_METADATA:
        raise ValueError(f"face {face.face_id}: source_ref or metadata too long")
    if face.vector.ndim != 1 or (dim is not None and face.vector.shape[0] != dim):
        raise GalleryMismatchError(f"face {face.face_id}: vector shape {face.vector.shape}, gallery dim {dim}")
    if not np.all(np.isfinite(face.vector)) or float(np.linalg.norm(face.vector)) == 0.0:
        raise ValueError(f"face {face.face_id}: vector is zero or not finite")


def normalise(vectors: npt.ArrayLike) -> Vectors:
    """Rows scaled to unit length (float32); a zero row stays zero."""
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    out: Vectors = (arr / np.where(norms == 0, 1.0, norms)).astype(np.float32, copy=False)
    return out


def enrol_face_id(watch_list: str, subject_id: str, image_sha256: str) -> str:
    """Deterministic id of the face enrolled from one image for one subject on one watch-list (resumable
    enrolment; unchanged by the rename from "gallery", so ids of earlier enrolments still match)."""
    digest = hashlib.sha256(f"{watch_list}\x00{subject_id}\x00{image_sha256}".encode()).hexdigest()
    return f"gf_{digest[:40]}"


def collection_name(prefix: str, model_id: str) -> str:
    """Milvus collection of one embedding model: ``<prefix>__<sanitised model id>_<8 hex of its hash>``.

    The hash keeps two model ids that sanitise alike (``a-b`` / ``a_b``) in separate collections.
    """
    slug = re.sub(r"[^a-z0-9]+", "_", model_id.lower()).strip("_")[:120] or "model"
    digest = hashlib.sha256(model_id.encode()).hexdigest()[:8]
    name = f"{prefix}__{slug}_{digest}"
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$", name):
        raise ValueError(f"collection prefix {prefix!r} gives an invalid Milvus collection name {name!r}")
    return name


def best_per_subject(hits: Iterable[H], subject: Callable[[H], str], score: Callable[[H], float]) -> list[H]:
    """One hit per subject, its highest-scoring one (the first of equal ones), best first, ties by subject id:
    the rule by which a search of several photos per subject becomes a candidate list (the match service and
    :func:`rfr.gallery.openset.aggregate_by_subject` alike)."""
    best: dict[str, H] = {}
    for hit in hits:
        held = best.get(subject(hit))
        if held is None or score(hit) > score(held):
            best[subject(hit)] = hit
    return sorted(best.values(), key=lambda h: (-score(h), subject(h)))


def rank_subjects(hits: Iterable[FaceHit], top_k: int, threshold: float) -> list[SubjectHit]:
    """Best photo per subject scoring >= ``threshold`` (:func:`best_per_subject`), top ``top_k``."""
    passing = (h for h in hits if h.score >= threshold)
    ranked = best_per_subject(passing, lambda h: h.subject_id, lambda h: h.score)[:top_k]
    return [SubjectHit(h.subject_id, h.watch_list, h.score, h.face_id, h.source_ref) for h in ranked]
