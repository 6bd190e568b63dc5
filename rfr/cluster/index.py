"""The nearest-neighbour index of earlier unknown faces: one Milvus collection per embedding model.

The collection is ``<cluster.collection_prefix>__<sanitised model id>_<8 hex>`` (the gallery's naming rule,
:func:`rfr.gallery.base.collection_name`, with the cluster prefix), so unknown faces never mix with the custody
gallery nor with another model's templates; the model id and dimension are recorded in its properties and checked
on open, as the gallery does. One row per sighting: ``face_id`` (primary key, so an upsert of a redelivered face
is idempotent), ``searched_at`` (unix milliseconds: retention deletes by it too) and the unit ``vector`` (COSINE,
the gallery's index type and parameters: :mod:`rfr.gallery.milvus_schema`). Strong consistency: a face added is
found by the very next search.

The index is not the truth (rfr/cluster/store.py is): a face is upserted here before its SQL transaction, so a
crash in between leaves a row no sighting names, which lookups ignore and a redelivery reuses;
:meth:`rfr.cluster.clusterer.Clusterer.repair_index` re-adds sightings a lost or restored index lacks.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from pymilvus import CollectionSchema, DataType, MilvusClient, MilvusException
from pymilvus.client.types import LoadState
from pymilvus.exceptions import (
    ConnectError,
    DataNotMatchException,
    DataTypeNotMatchException,
    MilvusUnavailableException,
    ParamError,
    PrimaryKeyException,
)

from rfr.cluster.rule import Vector, unit
from rfr.core.settings import MilvusSettings
from rfr.gallery.base import collection_name
from rfr.gallery.milvus import PROP_DIM, PROP_MODEL
from rfr.gallery.milvus_schema import connect, index_params, search_params

logger = logging.getLogger(__name__)

FACE_ID_MAX = 256
"""Longest ``face_id`` the index takes, in UTF-8 bytes (the VARCHAR primary key's ``max_length``)."""

REFUSAL_CODES = frozenset({5, 6, 7, 1100, 1101, 1102})
"""Milvus status codes that refuse the request itself: legacy ``IllegalArgument`` (5; milvus-lite answers 6) and
``IllegalDimension`` (7), and Milvus 2.3+'s ``ErrParameterInvalid`` / ``ErrParameterMissing`` /
``ErrParameterTooLarge`` (1100-1102, ``pkg/util/merr``)."""

_CLIENT_REFUSALS = (ParamError, DataTypeNotMatchException, DataNotMatchException, PrimaryKeyException)


class IndexUnavailableError(RuntimeError):
    """Milvus did not answer (or failed) a call of the unknown-face index: retry later."""


class IndexRefusedError(IndexUnavailableError):
    """Milvus refused the data or parameters of a call (a key over :data:`FACE_ID_MAX`, a wrong dimension, a bad
    filter): the request is at fault, not Milvus, so retrying it never helps. The record path treats it as a poison
    message; it subclasses :class:`IndexUnavailableError` so that passes which only log and retry later (index
    repair, retention) keep doing so."""


def refused(exc: MilvusException) -> bool:
    """Whether ``exc`` is Milvus refusing the request (data or parameters) rather than failing to serve it
    (connection lost, unavailable, rate limited, unexpected: those may pass on a retry)."""
    if isinstance(exc, (ConnectError, MilvusUnavailableException)) or getattr(exc, "retriable", False):
        return False
    if isinstance(exc, _CLIENT_REFUSALS) or getattr(exc, "is_input_error", False):
        return True
    return exc.code in REFUSAL_CODES or exc.compatible_code in REFUSAL_CODES


def check_face_id(face_id: str) -> None:
    """Raise :class:`IndexRefusedError` for a face id the index cannot key (over :data:`FACE_ID_MAX` UTF-8 bytes)."""
    size = len(face_id.encode())
    if size > FACE_ID_MAX:
        raise IndexRefusedError(f"face_id of {size} bytes is over the unknown-face index's key limit of "
                                f"{FACE_ID_MAX} (Milvus VARCHAR primary key)")


class IndexMismatchError(RuntimeError):
    """The collection exists but was made for another model or dimension: never write into it."""


def unknowns_schema(dim: int) -> CollectionSchema:
    """One row per unknown face: ``face_id`` (primary key), ``searched_at`` (unix ms), ``vector`` (``dim``)."""
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("face_id", DataType.VARCHAR, is_primary=True, max_length=FACE_ID_MAX)
    schema.add_field("searched_at", DataType.INT64)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    return schema


class ClusterIndex:
    """Unknown faces of every model in Milvus at ``settings.uri``. Thread-safe; connects lazily, reconnects after a
    failure. A refused request (:func:`refused`) is raised as :class:`IndexRefusedError`, keeping the client; every
    other Milvus or transport failure as :class:`IndexUnavailableError`, after dropping the client."""

    def __init__(self, settings: MilvusSettings, prefix: str,
                 client_factory: Callable[[], MilvusClient] | None = None) -> None:
        self.settings = settings
        self.prefix = prefix
        self._factory = client_factory or (lambda: connect(settings))
        self._client: MilvusClient | None = None
        self._dims: dict[str, int] = {}
        self._lock = threading.Lock()

    def collection(self, model_id: str) -> str:
        return collection_name(self.prefix, model_id)

    @contextmanager
    def _call(self, what: str, *, refusable: bool = True) -> Iterator[MilvusClient]:
        """The client for one call. ``refusable``: a refusal of this call is the request's fault (data calls), not
        the deployment's (connecting, creating or loading a collection: those are always unavailability)."""
        try:
            if self._client is None:
                try:
                    self._client = self._factory()
                except MilvusException as exc:
                    raise ConnectionError(str(exc)) from exc
            yield self._client
        except MilvusException as exc:
            if not (refusable and refused(exc)):
                self._reset()
                raise IndexUnavailableError(f"Milvus at {self.settings.uri}: {what} failed: {exc}") from exc
            raise IndexRefusedError(f"Milvus at {self.settings.uri} refused {what}: {exc}") from exc
        except (ConnectionError, TimeoutError) as exc:
            self._reset()
            raise IndexUnavailableError(f"Milvus at {self.settings.uri}: {what} failed: {exc}") from exc

    def _reset(self) -> None:
        """Forget the client (closed) and the dimensions read through it: the next call reconnects."""
        client, self._client = self._client, None
        self._dims.clear()
        if client is not None:
            try:
                client.close()
            except Exception:
                logger.debug("closing a failed Milvus client raised", exc_info=True)

    def _open(self, model_id: str, dim: int | None) -> int | None:
        """The collection's dimension (created with ``dim`` when missing and ``dim`` is given; else None)."""
        if model_id in self._dims:
            return self._dims[model_id]
        name = self.collection(model_id)
        with self._call("describe collection", refusable=False) as client:
            if not client.has_collection(name):
                if dim is None:
                    return None
                props = {PROP_MODEL: model_id, PROP_DIM: str(dim)}
                client.create_collection(name, schema=unknowns_schema(dim), index_params=index_params(self.settings),
                                         consistency_level="Strong", properties=props)
                logger.info("created collection %s (unknown faces of model %s, dim %d)", name, model_id, dim)
            desc = client.describe_collection(name)
            props = desc.get("properties") or {}
            if props.get(PROP_MODEL) != model_id:
                raise IndexMismatchError(f"collection {name} holds model {props.get(PROP_MODEL)!r}, not {model_id!r}")
            if client.get_load_state(name).get("state") != LoadState.Loaded:
                client.load_collection(name)
        found = int(props.get(PROP_DIM, -1))
        self._dims[model_id] = found
        return found

    def upsert(self, model_id: str, rows: Sequence[tuple[str, Vector, datetime]]) -> None:
        """Add or replace ``(face_id, vector, searched_at)`` rows (vectors are normalised here). Raises
        :class:`IndexRefusedError` for a face id over :data:`FACE_ID_MAX`, before any call."""
        if not rows:
            return
        for face_id, _, _ in rows:
            check_face_id(face_id)
        data = [{"face_id": f, "searched_at": int(at.timestamp() * 1000), "vector": unit(v).tolist()}
                for f, v, at in rows]
        with self._lock:
            dim = self._open(model_id, len(data[0]["vector"]))
            if any(len(d["vector"]) != dim for d in data):
                raise IndexMismatchError(f"{self.collection(model_id)} has dimension {dim}")
            with self._call("upsert") as client:
                client.upsert(self.collection(model_id), data)

    def search(self, model_id: str, vector: Vector, limit: int) -> list[tuple[str, float]]:
        """The ``limit`` nearest faces as ``(face_id, cosine similarity)``, most similar first ([] when none)."""
        query = unit(vector)
        with self._lock:
            if self._open(model_id, None) is None:
                return []
            with self._call("search") as client:
                raw = client.search(self.collection(model_id), data=[query.tolist()], limit=limit,
                                    search_params=search_params(self.settings, limit), output_fields=["face_id"])
        return [(_face_id(hit), float(hit["distance"])) for hit in (raw[0] if raw else [])]

    def present(self, model_id: str, face_ids: Sequence[str]) -> set[str]:
        """Those of ``face_ids`` that the index holds."""
        if not face_ids:
            return set()
        with self._lock:
            if self._open(model_id, None) is None:
                return set()
            with self._call("get") as client:
                rows = client.get(self.collection(model_id), ids=list(face_ids), output_fields=["face_id"])
        return {str(r["face_id"]) for r in rows}

    def delete(self, model_id: str, face_ids: Sequence[str]) -> None:
        """Remove ``face_ids`` (absent ones are ignored)."""
        if not face_ids:
            return
        with self._lock:
            if self._open(model_id, None) is None:
                return
            with self._call("delete") as client:
                client.delete(self.collection(model_id), ids=list(face_ids))

    def delete_before(self, model_id: str, before: datetime) -> None:
        """Remove every face searched before ``before``, whether or not a sighting names it (retention)."""
        with self._lock:
            if self._open(model_id, None) is None:
                return
            with self._call("delete by time") as client:
                client.delete(self.collection(model_id),
                              filter=f"searched_at < {int(before.timestamp() * 1000)}")

    def drop(self, model_id: str) -> None:
        """Delete one model's collection (tests and benchmarks)."""
        with self._lock, self._call("drop") as client:
            client.drop_collection(self.collection(model_id))
            self._dims.pop(model_id, None)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def _face_id(hit: dict[str, Any]) -> str:
    entity = hit.get("entity") or {}
    return str(entity.get("face_id", hit.get("face_id", hit.get("id"))))

