"""An exact, in-memory :class:`~rfr.gallery.base.Gallery` (numpy brute force), for tests and small tools."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from rfr.gallery.base import (
    FaceHit,
    GalleryFace,
    GalleryMismatchError,
    SubjectHit,
    SubjectSummary,
    Vectors,
    check_face,
    check_subject_id,
    normalise,
    rank_subjects,
)


class InMemoryGallery:
    """Same semantics as the Milvus gallery (per-subject ranking, watch-lists, erasure), exact search."""

    def __init__(self, model_id: str, dim: int | None = None) -> None:
        self._model_id = model_id
        self._dim = dim
        self._faces: dict[str, GalleryFace] = {}
        self._lock = threading.Lock()
        self.search_calls = 0

    @property
    def model_id(self) -> str:
        return self._model_id

    def dim(self) -> int | None:
        return self._dim

    def add(self, faces: Sequence[GalleryFace]) -> int:
        with self._lock:
            for face in faces:
                check_face(face, self._dim)
                if self._dim is None:
                    self._dim = int(face.vector.shape[0])
            for face in faces:
                self._faces[face.face_id] = face
        return len(faces)

    def search(self, vectors: Vectors, top_k: int, watch_lists: Sequence[str], threshold: float
               ) -> list[list[SubjectHit]]:
        queries = normalise(vectors)
        with self._lock:
            self.search_calls += 1
            if self._dim is not None and len(queries) and queries.shape[1] != self._dim:
                raise GalleryMismatchError(f"query dimension {queries.shape[1]}, gallery has {self._dim}")
            faces = [f for f in self._faces.values() if f.watch_list in set(watch_lists)]
        if not faces:
            return [[] for _ in queries]
        matrix = normalise(np.stack([f.vector for f in faces]))
        scores = queries @ matrix.T
        out = []
        for row in scores:
            hits = (FaceHit(f.face_id, f.subject_id, f.watch_list, float(s), f.source_ref)
                    for f, s in zip(faces, row, strict=True))
            out.append(rank_subjects(hits, top_k, threshold))
        return out

    def existing_face_ids(self, face_ids: Sequence[str]) -> set[str]:
        with self._lock:
            return {f for f in face_ids if f in self._faces}

    def face_vectors(self, face_ids: Sequence[str]) -> dict[str, Vectors]:
        with self._lock:
            held = [self._faces[f] for f in face_ids if f in self._faces]
        return {f.face_id: normalise(f.vector)[0] for f in held}

    def subject_faces(self, subject_id: str, watch_lists: Sequence[str] | None = None) -> list[tuple[str, str]]:
        check_subject_id(subject_id)
        with self._lock:
            return sorted((k, f.watch_list) for k, f in self._faces.items()
                          if f.subject_id == subject_id and (watch_lists is None or f.watch_list in watch_lists))

    def delete_subject(self, subject_id: str, watch_lists: Sequence[str] | None = None) -> int:
        check_subject_id(subject_id)
        with self._lock:
            doomed = [k for k, f in self._faces.items()
                      if f.subject_id == subject_id and (watch_lists is None or f.watch_list in watch_lists)]
            for k in doomed:
                del self._faces[k]
        return len(doomed)

    def count(self, watch_lists: Sequence[str] | None = None) -> int:
        with self._lock:
            return sum(1 for f in self._faces.values() if watch_lists is None or f.watch_list in watch_lists)

    def list_subjects(self, watch_lists: Sequence[str] | None = None) -> list[SubjectSummary]:
        counts: dict[tuple[str, str], int] = {}
        with self._lock:
            for f in self._faces.values():
                if watch_lists is None or f.watch_list in watch_lists:
                    counts[(f.watch_list, f.subject_id)] = counts.get((f.watch_list, f.subject_id), 0) + 1
        return [SubjectSummary(subject_id=s, watch_list=w, faces=n) for (w, s), n in sorted(counts.items())]

    def flush(self) -> None:
        return None
