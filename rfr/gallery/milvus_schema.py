"""The gallery collection's schema, the client connection, and the index / search parameters for each index type.

On disk a watch-list is the partition ``g_<watch-list>`` and the scalar field ``gallery`` of each row: both keep
the names they had before watch-lists were called so, and collections enrolled earlier are read unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymilvus import CollectionSchema, DataType, MilvusClient

from rfr.core.settings import MilvusSettings
from rfr.gallery.base import check_watch_list_name

PARTITION_PREFIX = "g_"
WATCH_LIST_FIELD = "gallery"  # the row's watch-list (the stored name predates the term)

GRPC_OPTIONS = {
    # pymilvus pings an idle channel every 10 s; a gRPC Python server (milvus-lite) answers that with GOAWAY
    # "too_many_pings" and the connection drops. Ping only during calls, and rarely; each call has a deadline.
    "grpc.keepalive_time_ms": 300_000,
    "grpc.keepalive_permit_without_calls": 0,
}


def connect(settings: MilvusSettings) -> MilvusClient:
    """A pymilvus client for ``settings.uri`` (raises ``MilvusException`` when the server does not answer)."""
    token = settings.token.get_secret_value() if settings.token else ""
    return MilvusClient(uri=settings.uri, token=token, db_name=settings.db_name, timeout=settings.timeout_s,
                        grpc_options=GRPC_OPTIONS)


def collection_schema(dim: int) -> CollectionSchema:
    """One row per enrolled photo; the primary key is the deterministic face id (upserts are idempotent)."""
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("face_id", DataType.VARCHAR, is_primary=True, max_length=128)
    schema.add_field("subject_id", DataType.VARCHAR, max_length=128)
    schema.add_field(WATCH_LIST_FIELD, DataType.VARCHAR, max_length=64)
    schema.add_field("source_ref", DataType.VARCHAR, max_length=1024)
    schema.add_field("enrolled_at", DataType.INT64)  # unix milliseconds
    schema.add_field("model_id", DataType.VARCHAR, max_length=128)
    schema.add_field("metadata", DataType.VARCHAR, max_length=4096)  # JSON text
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    return schema


def index_params(settings: MilvusSettings) -> Any:
    """COSINE index on ``vector`` of ``settings.index_type`` (HNSW by default; see benchmarks/bench_match.py)."""
    params: dict[str, Any] = {}
    if settings.index_type == "HNSW":
        params = {"M": settings.hnsw_m, "efConstruction": settings.hnsw_ef_construction}
    elif settings.index_type == "IVF_FLAT":
        params = {"nlist": settings.ivf_nlist}
    index = MilvusClient.prepare_index_params()
    index.add_index(field_name="vector", index_type=settings.index_type, metric_type="COSINE", params=params)
    return index


def search_params(settings: MilvusSettings, limit: int) -> dict[str, Any]:
    if settings.index_type == "HNSW":
        return {"metric_type": "COSINE", "params": {"ef": max(settings.search_ef, limit)}}
    if settings.index_type == "IVF_FLAT":
        return {"metric_type": "COSINE", "params": {"nprobe": settings.search_nprobe}}
    return {"metric_type": "COSINE", "params": {}}


def partition_for(watch_list: str) -> str:
    """The Milvus partition of ``watch_list``: ``g_<watch_list>`` (``ValueError`` for an invalid name)."""
    return PARTITION_PREFIX + check_watch_list_name(watch_list)


def quote(value: str) -> str:
    """A Milvus filter string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def watch_list_filter(watch_lists: Sequence[str] | None) -> str:
    """A Milvus filter keeping rows on ``watch_lists`` ("" for all; ``ValueError`` for an invalid name)."""
    if watch_lists is None:
        return ""
    return f"{WATCH_LIST_FIELD} in [" + ", ".join(quote(check_watch_list_name(w)) for w in watch_lists) + "]"
