"""Settings for every RFR process: one ``RFR_`` env prefix, nested groups (``RFR_KAFKA__BOOTSTRAP_SERVERS``).

Load them once in ``main()`` with :func:`load_settings` and pass the object down; nothing reads the
environment at import time.
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path
from typing import Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic.fields import FieldInfo
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
    max_pixels: int = Field(
        default=40_000_000, ge=1, description="Most decoded pixels per still (the decode's memory bound, x3 bytes). "
        "A larger baseline JPEG is decoded at 1/2, 1/4 or 1/8 scale to fit; other formats are refused unread."
    )
    max_side: int = Field(default=16_384, ge=1, description="Longest declared side (px) of a still; longer is refused.")
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
    max_faces: int = Field(
        default=256, ge=1, le=4096,
        description="Resource guard: most faces of one still passed on for search, largest first. A still "
        "has every usable face searched up to this; any face over it is reported (outcome 'dropped', status "
        "API 'faces_dropped', rfr_detect_faces_dropped_total, a log line), never dropped silently. 256 is "
        "far above the faces a CCTV still shows (a 1080p frame holds ~40 faces of 64 px side by side in a row).",
    )
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
    threshold: float = Field(
        default=0.6, ge=-1.0, le=1.0,
        description="Review threshold as a cosine similarity in [-1, 1] (not a percentage: 0.6, not 60); "
        "see docs/calibration.md.",
    )
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


class StreamSettings(_Group):
    """The at-least-once loop every stage runs (rfr/core/stream.py)."""

    max_attempts: int = Field(
        default=5, ge=1, le=100,
        description="Tries of one message that keeps failing while every dependency is up; then it is "
        "dead-lettered with reason retry_exhausted and the partition flows. A dependency outage is retried "
        "without limit (rfr_<service>_dependency_retries_total, alert RfrDependencyOutage).",
    )
    retry_backoff_s: float = Field(default=1.0, gt=0, description="First wait before a retry; doubles each time.")
    max_backoff_s: float = Field(default=30.0, gt=0, description="Longest wait between two retries.")


class DatasetsSettings(_Group):
    """Public face data the demo fetches when no local copy exists (rfr/tools/datasets.py)."""

    lfw_urls: list[str] = Field(
        default_factory=lambda: ["https://ndownloader.figshare.com/files/5976018",
                                 "http://vis-www.cs.umass.edu/lfw/lfw.tgz"],
        min_length=1,
        description="Where the LFW archive (lfw.tgz) is fetched from, tried in order; a JSON list. Default: "
        "scikit-learn's figshare copy, then the original at UMass (sklearn/datasets/_lfw.py).",
    )
    lfw_sha256: str = Field(
        default="055f7d9c632d7370e6fb4afc7468d40f970c34a80d4c6f50ffec63f5a8d536c0", pattern="^[0-9a-f]{64}$",
        description="sha256 (lowercase hex) the downloaded archive must have, else it is refused and deleted; "
        "default: lfw.tgz as pinned by scikit-learn.",
    )
    dir: Path | None = Field(default=None, description="Cache of downloaded datasets; default RFR_MODEL_DIR/datasets.")
    download: bool = Field(default=True, description="Download LFW when the demo finds no local faces.")
    timeout_s: float = Field(default=30.0, gt=0, description="Seconds to connect and for each read of a download.")


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
    stream: StreamSettings = StreamSettings()
    datasets: DatasetsSettings = DatasetsSettings()


class SettingsError(ValueError):
    """The environment holds an invalid setting; the message names each variable, what it allows and a hint."""


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment (``RFR_*``), with keyword overrides for tests and CLIs.

    Raises :class:`SettingsError` (one line per bad variable, no traceback needed) when a value is invalid.
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(describe_errors(exc)) from None


EXIT_BAD_SETTINGS = 2


def settings_or_exit(program: str) -> Settings:
    """:func:`load_settings` for a ``main()``: an invalid setting prints one short message per variable to
    stderr and exits with status 2, no traceback."""
    try:
        return load_settings()
    except SettingsError as exc:
        print(f"{program}: invalid settings\n{exc}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_SETTINGS) from None


def describe_errors(exc: ValidationError) -> str:
    """``RFR_MATCH__THRESHOLD=60: Input should be less than or equal to 1 (allowed: -1 to 1). <description>``."""
    lines = []
    for err in exc.errors():
        loc = [str(part) for part in err["loc"]]
        name = "RFR_" + "__".join(loc).upper()
        field = _field(loc)
        if err["type"] == "extra_forbidden":
            lines.append(f"{name}: no such setting{_did_you_mean(loc)}")
            continue
        value = f"={err['input']!s:.60}" if isinstance(err.get("input"), str | int | float) else ""
        allowed = f" (allowed: {_allowed(field)})" if field is not None and _allowed(field) else ""
        hint = f" {field.description}" if field is not None and field.description else ""
        lines.append(f"{name}{value}: {err['msg']}{allowed}.{hint}")
    return "\n".join(lines)


def _field(loc: list[str]) -> FieldInfo | None:
    model: type[BaseModel] = Settings
    info: FieldInfo | None = None
    for part in loc:
        info = model.model_fields.get(part)
        if info is None:
            return None
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            model = info.annotation
    return info


def _allowed(field: FieldInfo) -> str:
    """The choices of a Literal, or the bounds of a number (``>= -1.0 and <= 1.0``); empty when unconstrained."""
    if get_origin(field.annotation) is Literal:
        return ", ".join(map(str, get_args(field.annotation)))
    bounds = []
    for meta in field.metadata:
        for attr, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            if getattr(meta, attr, None) is not None:
                bounds.append(f"{sign} {getattr(meta, attr)}")
    return " and ".join(bounds)


def _did_you_mean(loc: list[str]) -> str:
    parent = _field(loc[:-1]) if len(loc) > 1 else None
    names = list(parent.annotation.model_fields) if parent is not None and isinstance(parent.annotation, type) \
        and issubclass(parent.annotation, BaseModel) else list(Settings.model_fields)
    close = difflib.get_close_matches(loc[-1], names, n=1)
    return f"; did you mean RFR_{'__'.join([*loc[:-1], close[0]]).upper()}?" if close else ""
