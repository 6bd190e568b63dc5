"""Settings for every RFR process: one ``RFR_`` env prefix, nested groups (``RFR_KAFKA__BOOTSTRAP_SERVERS``).

Load them once in ``main()`` with :func:`load_settings` and pass the object down; nothing reads the
environment at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(_Group):
    bootstrap_servers: str = "127.0.0.1:19092"
    client_id: str = "rfr"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1000
    max_poll_interval_ms: int = 300_000
    assignment_strategy: Literal["range", "roundrobin"] = "range"
    partitions: int = Field(default=4, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    retention_ms: int = 7 * 24 * 3600 * 1000
    message_max_bytes: int = 4 * 1024 * 1024
    topic_namespace: str = Field(
        default="", description="Prefix for every topic name (isolates test runs and tenants)."
    )
    group_namespace: str = Field(default="", description="Prefix for every consumer group id.")


class MilvusSettings(_Group):
    uri: str = "http://127.0.0.1:19530"
    token: SecretStr | None = None
    db_name: str = "default"
    collection_prefix: str = "rfr_faces"
    index_type: Literal["HNSW", "FLAT", "IVF_FLAT"] = "HNSW"
    hnsw_m: int = 16
    hnsw_ef_construction: int = 200
    search_ef: int = 128
    ivf_nlist: int = Field(default=1024, ge=1, description="IVF_FLAT clusters (index_type IVF_FLAT only).")
    search_nprobe: int = Field(default=32, ge=1, description="IVF_FLAT clusters visited per search.")
    timeout_s: float = Field(default=30.0, gt=0, description="Deadline of one Milvus call.")


class MetricsSettings(_Group):
    host: str = "127.0.0.1"
    ingest_port: int = 9401
    detect_port: int = 9402
    embed_port: int = 9403
    match_port: int = 9404


class IngestSettings(_Group):
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    max_bytes: int = Field(default=20 * 1024 * 1024, ge=1)
    max_pixels: int = Field(default=40_000_000, ge=1)
    max_side: int = Field(default=16_384, ge=1)
    inline_max_bytes: int = Field(
        default=700 * 1024, description="Larger stills travel as a claim-check reference to the blob store."
    )
    api_keys_file: Path | None = None
    api_keys: str = Field(
        default="", description="'retailer:sha256hex,...' pairs (hashed keys), in addition to api_keys_file."
    )
    db_path: Path | None = None
    max_files_per_request: int = Field(default=64, ge=1, description="Images in one HTTP POST.")
    max_request_bytes: int = Field(default=64 * 1024 * 1024, ge=1, description="Body of one HTTP POST.")
    batch_size: int = Field(default=16, ge=1, description="Kafka submissions handled per batch.")


class DetectSettings(_Group):
    min_face_px: int = Field(default=32, ge=8, description="Smallest face width (px) the detector looks for.")
    strategy: str = Field(
        default="auto", description="Detection strategy: auto (tile pyramid from min_face_px), full, tiles540, ..."
    )
    score_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    nms_iou: float = Field(default=0.3, ge=0.0, le=1.0)
    tile_overlap: float = Field(default=0.25, ge=0.0, lt=1.0)
    max_faces: int = Field(default=32, ge=1)
    gate_min_face_px: int = Field(default=32, ge=1)
    gate_min_score: float = Field(default=0.6, ge=0.0, le=1.0)
    gate_min_blur: float = Field(
        default=150.0, ge=0.0, description="Variance of Laplacian of the aligned crop seen at 32x32 (quality.py)."
    )
    crop_size: int = 160
    crop_margin: float = Field(default=0.2, ge=0.0, description="Margin around the face as a fraction of its width.")
    threads: int = Field(default=1, ge=1)


class EmbedSettings(_Group):
    model: Literal["casia-webface", "vggface2"] = "casia-webface"
    weights_path: Path | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    threads: int = Field(default=2, ge=1)
    batch_size: int = Field(default=32, ge=1)
    batch_timeout_ms: int = Field(default=50, ge=0)


class MatchSettings(_Group):
    top_k: int = Field(default=5, ge=1, le=100)
    threshold: float = Field(default=0.6, ge=-1.0, le=1.0, description="Cosine similarity; see docs/calibration.md.")
    galleries: list[str] = Field(default_factory=lambda: ["custody"])
    batch_size: int = Field(default=64, ge=1)
    batch_timeout_ms: int = Field(default=20, ge=0)
    model_id: str | None = Field(
        default=None, description="Embedding model whose gallery is searched; default: the one embed.model selects."
    )
    gallery_size_interval_s: float = Field(default=30.0, gt=0, description="Refresh of rfr_match_gallery_faces.")
    enrol_multi_face: Literal["largest", "reject"] = Field(
        default="largest", description="Enrolment photo with several accepted faces: keep the largest, or reject it."
    )


class StackSettings(_Group):
    state_dir: Path = Path(".rfr")
    broker_port: int = 19092
    milvus_port: int = 19530


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RFR_", env_nested_delimiter="__", extra="forbid", frozen=True, env_file=None
    )

    model_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "rfr")
    blob_dir: Path = Path(".rfr/blobs")
    log_level: str = "INFO"
    log_json: bool = False
    kafka: KafkaSettings = KafkaSettings()
    milvus: MilvusSettings = MilvusSettings()
    metrics: MetricsSettings = MetricsSettings()
    ingest: IngestSettings = IngestSettings()
    detect: DetectSettings = DetectSettings()
    embed: EmbedSettings = EmbedSettings()
    match: MatchSettings = MatchSettings()
    stack: StackSettings = StackSettings()


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment (``RFR_*``), with keyword overrides for tests and CLIs."""
    return Settings(**overrides)  # type: ignore[arg-type]
