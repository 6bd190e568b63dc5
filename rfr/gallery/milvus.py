"""The :class:`~rfr.gallery.base.Gallery` on Milvus (pymilvus ``MilvusClient``), by URI.

The same code serves the local milvus-lite server (``milvus-lite server``, the default
``http://127.0.0.1:19530``) and a Milvus server or cluster. One collection per embedding model
(:func:`~rfr.gallery.base.collection_name`), with the model id and dimension recorded in the collection
properties and checked on every open: embeddings of different models never mix.

Each watch-list is its own partition (``g_<name>``; :mod:`~rfr.gallery.milvus_schema` has the on-disk names), so a
search restricted to some watch-lists runs the ANN index of those partitions only, with no filter inside the graph
walk (an approximate index under a selective filter returns fewer hits; see benchmarks/bench_match.py). Results are
grouped by subject in the engine (``group_by_field``), so ``top_k`` means distinct subjects. The collection is
created with Strong consistency: an erased subject is gone from the very next search.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from pymilvus import MilvusClient, MilvusException
from pymilvus.client.types import LoadState

from rfr.core.settings import MilvusSettings, Settings
from rfr.gallery.base import (
    FaceHit,
    GalleryFace,
    GalleryMismatchError,
    GalleryUnavailableError,
    SubjectHit,
    SubjectSummary,
    Vectors,
    check_face,
    check_subject_id,
    collection_name,
    normalise,
    rank_subjects,
)
from rfr.gallery.milvus_schema import (
    WATCH_LIST_FIELD,
    collection_schema,
    connect,
    index_params,
    partition_for,
    quote,
    search_params,
    watch_list_filter,
)

logger = logging.getLogger(__name__)

PROP_MODEL = "rfr.model_id"
PROP_DIM = "rfr.dim"
PROP_WEIGHTS = "rfr.weights_sha256"
PARTITIONS_TTL_S = 10.0
OUTPUT_FIELDS = ["subject_id", WATCH_LIST_FIELD, "source_ref"]
VECTOR_READ_CHUNK = 1000
"""Face ids per read of stored vectors (:meth:`MilvusGallery.face_vectors`), to stay within a request's size."""


class MilvusGallery:
    """Faces of one embedding model in Milvus. Thread-safe; connects lazily and reconnects by itself."""

    def __init__(self, settings: MilvusSettings, model_id: str, *, weights_sha256: str = "",
                 client_factory: Callable[[], MilvusClient] | None = None) -> None:
        self.settings = settings
        self._model_id = model_id
        self.weights_sha256 = weights_sha256
        self.collection = collection_name(settings.collection_prefix, model_id)
        self._client_factory = client_factory or self._connect
        self._client: MilvusClient | None = None
        self._dim: int | None = None
        self._partitions: set[str] = set()
        self._partitions_at = 0.0
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return self._model_id

    # -- connection and collection ---------------------------------------------------------------------------
    def _connect(self) -> MilvusClient:
        return connect(self.settings)

    @contextmanager
    def _call(self, what: str) -> Iterator[MilvusClient]:
        """The client, with Milvus and transport failures turned into :class:`GalleryUnavailableError`."""
        try:
            if self._client is None:
                self._client = self._client_factory()
            yield self._client
        except (MilvusException, ConnectionError, TimeoutError) as exc:
            self._discard_client()
            raise GalleryUnavailableError(f"Milvus at {self.settings.uri}: {what} failed: {exc}") from exc

    def _discard_client(self) -> None:
        """Forget the client after a failure: the next call connects afresh and opens the collection again."""
        client, self._client = self._client, None
        self._dim = None  # re-check (and re-load) the collection on the next call
        if client is not None:
            try:
                client.close()
            except Exception:
                logger.debug("closing a failed Milvus client raised", exc_info=True)

    def dim(self) -> int | None:
        with self._lock:
            return self._open()

    def _open(self) -> int | None:
        """The collection's dimension after checking it belongs to this model; None when it does not exist yet."""
        if self._dim is not None:
            return self._dim
        with self._call("describe collection") as client:
            if not client.has_collection(self.collection):
                return None
            desc = client.describe_collection(self.collection)
        props = desc.get("properties") or {}
        if props.get(PROP_MODEL) != self._model_id:
            raise GalleryMismatchError(
                f"collection {self.collection} holds embeddings of model {props.get(PROP_MODEL)!r}, "
                f"not {self._model_id!r}; it was not made by this gallery"
            )
        vector = next((f for f in desc["fields"] if f["name"] == "vector"), None)
        dim = int(props.get(PROP_DIM, -1))
        if vector is None or int(vector["params"]["dim"]) != dim:
            raise GalleryMismatchError(f"collection {self.collection}: vector field does not match {PROP_DIM}={dim}")
        with self._call("load collection") as client:
            if client.get_load_state(self.collection).get("state") != LoadState.Loaded:
                client.load_collection(self.collection)  # a restarted milvus-lite server comes back released
        stored_weights = props.get(PROP_WEIGHTS, "")
        if self.weights_sha256 and stored_weights and stored_weights != self.weights_sha256:
            logger.warning("collection %s was enrolled with weights %s, this process has %s (same model id %s)",
                           self.collection, stored_weights[:12], self.weights_sha256[:12], self._model_id)
        self._dim = dim
        return dim

    def _create(self, dim: int) -> None:
        props = {PROP_MODEL: self._model_id, PROP_DIM: str(dim), PROP_WEIGHTS: self.weights_sha256}
        with self._call("create collection") as client:
            try:
                client.create_collection(self.collection, schema=collection_schema(dim),
                                         index_params=index_params(self.settings), consistency_level="Strong",
                                         properties=props)
                logger.info("created collection %s (model %s, dim %d, %s)", self.collection, self._model_id, dim,
                            self.settings.index_type)
            except MilvusException:
                if not client.has_collection(self.collection):
                    raise
                logger.info("collection %s was created concurrently", self.collection)

    def _existing_partitions(self, client: MilvusClient, wanted: Sequence[str]) -> list[str]:
        now = time.monotonic()
        if any(p not in self._partitions for p in wanted) and now - self._partitions_at > PARTITIONS_TTL_S:
            self._partitions = set(client.list_partitions(self.collection))
            self._partitions_at = now
        return [p for p in wanted if p in self._partitions]

    # -- the Gallery protocol -----------------------------------------------------------------------------------
    def add(self, faces: Sequence[GalleryFace]) -> int:
        if not faces:
            return 0
        with self._lock:
            dim = self._open()
            for face in faces:
                check_face(face, dim)
            if dim is None:
                dim = int(faces[0].vector.shape[0])
                self._create(dim)
                self._dim = None
                self._open()
            by_partition: dict[str, list[dict[str, Any]]] = {}
            for face in faces:
                by_partition.setdefault(partition_for(face.watch_list), []).append(self._row(face))
            with self._call("upsert") as client:
                for partition, rows in by_partition.items():
                    if partition not in self._partitions:
                        self._ensure_partition(client, partition)
                    client.upsert(self.collection, rows, partition_name=partition)
        return len(faces)

    def _ensure_partition(self, client: MilvusClient, partition: str) -> None:
        if not client.has_partition(self.collection, partition):
            try:
                client.create_partition(self.collection, partition)
            except MilvusException:
                if not client.has_partition(self.collection, partition):  # not made by a concurrent enrolment
                    raise
        self._partitions.add(partition)

    def _row(self, face: GalleryFace) -> dict[str, Any]:
        return {
            "face_id": face.face_id, "subject_id": face.subject_id, WATCH_LIST_FIELD: face.watch_list,
            "source_ref": face.source_ref, "enrolled_at": int(face.enrolled_at.timestamp() * 1000),
            "model_id": self._model_id, "metadata": face.metadata,
            "vector": normalise(face.vector)[0].tolist(),
        }

    def search(self, vectors: Vectors, top_k: int, watch_lists: Sequence[str], threshold: float
               ) -> list[list[SubjectHit]]:
        queries = normalise(vectors)
        if len(queries) == 0:
            return []
        with self._lock:
            dim = self._open()
            if dim is None:
                return [[] for _ in queries]
            if queries.shape[1] != dim:
                raise GalleryMismatchError(f"query dimension {queries.shape[1]}, gallery {self.collection} has {dim}")
            with self._call("search") as client:
                partitions = self._existing_partitions(client, [partition_for(w) for w in watch_lists])
                if not partitions:
                    return [[] for _ in queries]
                raw = client.search(
                    self.collection, data=queries.tolist(), limit=top_k, output_fields=OUTPUT_FIELDS,
                    search_params=search_params(self.settings, top_k), partition_names=partitions,
                    group_by_field="subject_id",
                )
        return [rank_subjects(self._hits(row), top_k, threshold) for row in raw]

    @staticmethod
    def _hits(row: Sequence[dict[str, Any]]) -> Iterator[FaceHit]:
        for hit in row:
            entity = hit.get("entity") or {}
            yield FaceHit(
                face_id=str(hit.get("face_id", hit.get("id"))),
                subject_id=str(entity["subject_id"]),
                watch_list=str(entity[WATCH_LIST_FIELD]),
                score=float(hit["distance"]),
                source_ref=str(entity.get("source_ref") or ""),
            )

    def existing_face_ids(self, face_ids: Sequence[str]) -> set[str]:
        if not face_ids:
            return set()
        with self._lock:
            if self._open() is None:
                return set()
            with self._call("get") as client:
                rows = client.get(self.collection, ids=list(face_ids), output_fields=["face_id"])
        return {str(r["face_id"]) for r in rows}

    def face_vectors(self, face_ids: Sequence[str]) -> dict[str, Vectors]:
        if not face_ids:
            return {}
        with self._lock:
            if self._open() is None:
                return {}
            with self._call("get vectors") as client:
                ids = list(face_ids)
                rows = [r for i in range(0, len(ids), VECTOR_READ_CHUNK)
                        for r in client.get(self.collection, ids=ids[i:i + VECTOR_READ_CHUNK],
                                            output_fields=["face_id", "vector"])]
        return {str(r["face_id"]): normalise(np.asarray(r["vector"], np.float32))[0] for r in rows}

    def subject_faces(self, subject_id: str, watch_lists: Sequence[str] | None = None) -> list[tuple[str, str]]:
        expr = _subject_filter(subject_id, watch_lists)
        with self._lock:
            if self._open() is None:
                return []
            with self._call("query subject") as client:
                rows = client.query(self.collection, filter=expr, output_fields=["face_id", WATCH_LIST_FIELD])
        return sorted((str(r["face_id"]), str(r[WATCH_LIST_FIELD])) for r in rows)

    def delete_subject(self, subject_id: str, watch_lists: Sequence[str] | None = None) -> int:
        expr = _subject_filter(subject_id, watch_lists)
        with self._lock:
            if self._open() is None:
                return 0
            with self._call("delete") as client:
                ids = [str(r["face_id"]) for r in client.query(self.collection, filter=expr, output_fields=["face_id"])]
                if ids:
                    client.delete(self.collection, ids=ids)
        logger.info("erased %d face(s) of one subject from %s", len(ids), self.collection)
        return len(ids)

    def count(self, watch_lists: Sequence[str] | None = None) -> int:
        with self._lock:
            if self._open() is None:
                return 0
            with self._call("count") as client:
                rows = client.query(self.collection, filter=watch_list_filter(watch_lists),
                                    output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def list_subjects(self, watch_lists: Sequence[str] | None = None) -> list[SubjectSummary]:
        counts: dict[tuple[str, str], int] = {}
        with self._lock:
            if self._open() is None:
                return []
            with self._call("list subjects") as client:
                iterator = client.query_iterator(self.collection, batch_size=5000,
                                                 filter=watch_list_filter(watch_lists),
                                                 output_fields=["subject_id", WATCH_LIST_FIELD])
                try:
                    while batch := iterator.next():
                        for row in batch:
                            key = (str(row[WATCH_LIST_FIELD]), str(row["subject_id"]))
                            counts[key] = counts.get(key, 0) + 1
                finally:
                    iterator.close()
        return [SubjectSummary(subject_id=s, watch_list=w, faces=n) for (w, s), n in sorted(counts.items())]

    def flush(self) -> None:
        with self._lock:
            if self._open() is None:
                return
            with self._call("flush") as client:
                client.flush(self.collection)

    def drop(self) -> None:
        """Delete the whole collection (tests and benchmarks)."""
        with self._lock, self._call("drop") as client:
            client.drop_collection(self.collection)
            self._dim = None
            self._partitions.clear()

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def _subject_filter(subject_id: str, watch_lists: Sequence[str] | None) -> str:
    """The Milvus filter of one subject's photos (on ``watch_lists``, default all); ``ValueError`` for a bad id."""
    check_subject_id(subject_id)
    return " and ".join(e for e in (f"subject_id == {quote(subject_id)}", watch_list_filter(watch_lists)) if e)


def gallery_model_id(settings: Settings) -> str:
    """The embedding model whose gallery a process uses: ``match.model_id``, else the one ``embed.model`` names."""
    if settings.match.model_id:
        return settings.match.model_id
    from rfr.models import facenet_model_id  # torch-free: the match service never loads the model

    return facenet_model_id(settings.embed.model)


def open_gallery(settings: Settings, model_id: str | None = None, weights_sha256: str = "") -> MilvusGallery:
    """The gallery of ``model_id`` (default :func:`gallery_model_id`) at ``settings.milvus.uri``; connects lazily."""
    return MilvusGallery(settings.milvus, model_id or gallery_model_id(settings), weights_sha256=weights_sha256)
