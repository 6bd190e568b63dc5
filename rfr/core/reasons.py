"""Every machine reason RFR gives for not taking something: one enum, so a dead letter's ``rfr-reason`` header,
an outcome's ``detail``, a metric's ``reason`` label, an HTTP error body and an enrolment report all speak the
same words. Values are stable API: dashboards, alerts and case systems match on them.

Files met while walking a folder have their own, narrower :class:`rfr.core.image_files.SkipReason` (hidden,
broken link, ...): those are not still rejections but entries that never became a still.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    # the still itself (rfr.core.imaging): refused before or while decoding
    EMPTY = "empty"
    TOO_LARGE_BYTES = "too_large_bytes"
    TOO_MANY_PIXELS = "too_many_pixels"
    UNSUPPORTED_FORMAT = "unsupported_format"
    CORRUPT = "corrupt"
    TRUNCATED = "truncated"
    ZERO_SIZE = "zero_size"
    # the submission's metadata (ingest)
    MISSING_METADATA = "missing_metadata"
    INVALID_METADATA = "invalid_metadata"
    # the HTTP channel
    TOO_MANY_FILES = "too_many_files"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    UNAUTHORIZED = "unauthorized"
    UNAVAILABLE = "unavailable"  # the submission store does not answer: retry later (HTTP 503)
    # one face (rfr.face.quality's gate, detect's resource guard)
    TOO_SMALL = "too_small"
    LOW_SCORE = "low_score"
    BLURRY = "blurry"  # sharpness under detect.gate_min_sharpness
    BAD_POSE = "bad_pose"
    OVER_MAX_FACES = "over_max_faces"
    # a gallery photo (rfr.gallery.extraction, enrolment)
    NO_FACE = "no_face"
    LOW_QUALITY = "low_quality"
    MULTIPLE_FACES = "multiple_faces"
    INVALID_SUBJECT_ID = "invalid_subject_id"
    SHARED_PHOTO = "shared_photo"
    METADATA_TOO_LONG = "metadata_too_long"
    MALFORMED_ROW = "malformed_row"
    MISSING_IMAGE_PATH = "missing_image_path"
    # events between the stages
    INVALID_MESSAGE = "invalid_message"
    INVALID_FACE_EVENT = "invalid_face_event"
    INVALID_OUTCOME_EVENT = "invalid_outcome_event"
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    NO_IMAGE = "no_image"
    BLOB_UNAVAILABLE = "blob_unavailable"
    DECODE_MISMATCH = "decode_mismatch"
    BAD_CROP = "bad_crop"
    BAD_CROP_SHAPE = "bad_crop_shape"
    NON_FINITE_EMBEDDING = "non_finite_embedding"
    MODEL_MISMATCH = "model_mismatch"
    DIM_MISMATCH = "dim_mismatch"
    INVALID_VECTOR = "invalid_vector"
    # the stream loop
    RETRY_EXHAUSTED = "retry_exhausted"
