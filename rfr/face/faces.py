"""One still -> the faces worth matching: detect, align, grade, gate.

The same function serves the detect service (probes) and enrolment/evaluation (gallery), so a gallery photo and a
probe photo of the same face go through exactly the same code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from rfr.core.schemas import FaceQuality
from rfr.core.settings import DetectSettings
from rfr.face.align import align_face
from rfr.face.detector import Detection, Detector
from rfr.face.quality import assess, gate


@dataclass(frozen=True)
class FoundFace:
    detection: Detection
    crop: npt.NDArray[np.uint8]  # aligned (crop_size, crop_size, 3) RGB
    quality: FaceQuality
    gated_reason: str | None = None  # an investigative search: the gate's reason this face was let through anyway


@dataclass(frozen=True)
class RejectedFace:
    detection: Detection
    quality: FaceQuality
    reason: str
    crop: npt.NDArray[np.uint8] | None = None  # the aligned crop, kept for an investigative search


@dataclass(frozen=True)
class FaceFindings:
    accepted: list[FoundFace] = field(default_factory=list)
    rejected: list[RejectedFace] = field(default_factory=list)

    def rejection_counts(self) -> dict[str, int]:
        """Faces the quality gate turned away, by reason."""
        counts: dict[str, int] = {}
        for r in self.rejected:
            counts[str(r.reason)] = counts.get(str(r.reason), 0) + 1
        return dict(sorted(counts.items()))

    def rejection_summary(self) -> str:
        return ", ".join(f"{reason}×{n}" for reason, n in self.rejection_counts().items())

    def with_gated(self) -> FaceFindings:
        """An investigative search: the faces the quality gate stopped become searchable too, after the accepted
        ones (largest first), each marked with its ``gated_reason``; a face rejected without a crop stays rejected.
        The default policy (this method unused) stays as measured in :mod:`rfr.face.quality`."""
        gated = [FoundFace(r.detection, r.crop, r.quality, gated_reason=r.reason)
                 for r in self.rejected if r.crop is not None]
        gated.sort(key=lambda f: f.quality.face_px, reverse=True)
        return FaceFindings(accepted=[*self.accepted, *gated], rejected=[r for r in self.rejected if r.crop is None])


def find_faces(image_rgb: npt.NDArray[np.uint8], detector: Detector, settings: DetectSettings) -> FaceFindings:
    """Every detected face, aligned and graded; accepted ones largest first."""
    findings = FaceFindings()
    for det in detector.detect(image_rgb):
        crop = align_face(image_rgb, det, size=settings.crop_size, margin=settings.crop_margin)
        quality = assess(det, crop)
        reason = gate(quality, settings)
        if reason is None:
            findings.accepted.append(FoundFace(det, crop, quality))
        else:
            findings.rejected.append(RejectedFace(det, quality, reason, crop))
    findings.accepted.sort(key=lambda f: f.quality.face_px, reverse=True)
    return findings
