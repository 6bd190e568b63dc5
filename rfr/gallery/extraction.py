"""Gallery photos through the probes' path: decode -> detect -> align -> quality gate -> embed.

Enrolment and calibration use exactly the functions the ingest, detect and embed services use
(:func:`rfr.core.imaging.decode_image`, :func:`rfr.face.faces.find_faces`, the embed service's embedder),
so a gallery vector and a probe vector of the same photo are the same vector.

A photo with several accepted faces: ``largest`` keeps the largest face (a mugshot's subject fills the frame;
LFW photos often show people in the background) and reports a ``multiple_faces`` warning; ``reject`` refuses
the photo. Choose ``reject`` where a wrong face in the gallery costs more than a missing photo.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
import numpy.typing as npt

from rfr.core.errors import ReasonedError
from rfr.core.reasons import Reason
from rfr.embedding.protocol import Embedder

if TYPE_CHECKING:
    from rfr.core.settings import Settings


MultiFacePolicy = Literal["largest", "reject"]
Crop = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class FaceCrop:
    """An accepted face: its aligned 160x160 RGB crop and its size (face width in pixels, or any size measure)."""

    crop: Crop
    size: float


@dataclass(frozen=True)
class Extraction:
    """The faces of one photo that passed the quality gate, and the reasons of those that did not."""

    faces: list[FaceCrop] = field(default_factory=list)
    gated: list[str] = field(default_factory=list)


class ExtractionRejected(ReasonedError):
    """The photo yields no face to enrol; ``reason`` is machine-readable (e.g. ``corrupt``, ``no_face``)."""


class FaceExtractor(Protocol):
    def extract(self, data: bytes) -> Extraction:
        """The faces in encoded image bytes; raises :class:`ExtractionRejected` for an unusable image."""
        ...


@dataclass(frozen=True)
class Choice:
    face: FaceCrop
    warning: str | None = None


def choose_face(extraction: Extraction, policy: MultiFacePolicy) -> Choice:
    """The one face to keep from a gallery photo, or :class:`ExtractionRejected` (``no_face``, ``low_quality``,
    ``multiple_faces``)."""
    if not extraction.faces:
        if extraction.gated:
            raise ExtractionRejected(Reason.LOW_QUALITY, ", ".join(sorted(set(extraction.gated))))
        raise ExtractionRejected(Reason.NO_FACE)
    if len(extraction.faces) == 1:
        return Choice(extraction.faces[0])
    if policy == "reject":
        raise ExtractionRejected(Reason.MULTIPLE_FACES, f"{len(extraction.faces)} faces")
    largest = max(extraction.faces, key=lambda f: f.size)
    return Choice(largest, warning=f"multiple_faces: {len(extraction.faces)} faces, kept the largest")


class PipelineExtractor:
    """The real :class:`FaceExtractor`: the ingest decoder and the detect service's ``find_faces``."""

    def __init__(self, settings: Settings) -> None:
        from rfr.core.imaging import ImageLimits
        from rfr.face.runners import make_detector

        self.settings = settings
        self.limits = ImageLimits.from_settings(settings.ingest)
        self.detector = make_detector(settings.detect, settings.model_dir)

    def extract(self, data: bytes) -> Extraction:
        from rfr.core.imaging import ImageRejected, decode_image
        from rfr.face.faces import find_faces

        try:
            image = decode_image(data, self.limits)
        except ImageRejected as exc:
            raise ExtractionRejected(exc.reason, exc.detail) from exc
        findings = find_faces(image.rgb, self.detector, self.settings.detect)
        faces = [FaceCrop(as_probe_crop(f.crop), float(f.quality.face_px)) for f in findings.accepted]
        return Extraction(faces=faces, gated=[r.reason for r in findings.rejected])

    def close(self) -> None:
        from rfr.face.detector import close_detector

        close_detector(self.detector)


def as_probe_crop(crop: Crop) -> Crop:
    """The crop as the embed service sees a probe's: JPEG-encoded by detect, decoded by embed."""
    from rfr.face.crops import decode_crop, encode_crop

    return decode_crop(encode_crop(crop), size=crop.shape[0])


def load_embedder(settings: Settings) -> Embedder:
    """The embed service's embedder for ``settings``, weights verified and model built now (fails fast)."""
    from rfr.embedding.embedder import load_embedder as _load

    return _load(settings.embed, settings.model_dir).load()


def embed_crops(embedder: Embedder, crops: Sequence[Crop]) -> npt.NDArray[np.float32]:
    if not crops:
        return np.zeros((0, embedder.dim), dtype=np.float32)
    out: npt.NDArray[np.float32] = np.asarray(embedder.embed(np.stack(crops)), dtype=np.float32)
    return out
