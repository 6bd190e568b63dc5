"""Fields the v3 events need in tests that do not care about the probe's still, box or crop."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np

from rfr.core.geometry import Box
from rfr.core.schemas import Probe, template_bytes

CROP_JPEG = b"\xff\xd8\xff\xe0fake-crop\xff\xd9"
BOX = Box(10.0, 20.0, 80.0, 80.0)


def probe_fields(still_ref: str | None = None) -> dict[str, Any]:
    """The probe fields of an EmbeddingEvent v3."""
    return {"still_ref": still_ref, "box": BOX, "crop_jpeg": CROP_JPEG}


def probe(template: bytes | None = None, still_ref: str | None = None) -> Probe:
    """A Probe for a CandidateList v3 (template: 16 ones unless given)."""
    return Probe(still_ref=still_ref, box=BOX, crop_jpeg=CROP_JPEG,
                 template=template or template_bytes(np.ones(16, dtype=np.float32)))


def search_fields(started_at: datetime, template: bytes | None = None) -> dict[str, Any]:
    """The v3 search fields of a CandidateList."""
    return {"search_started_at": started_at, "probe": probe(template)}
