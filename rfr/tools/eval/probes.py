"""One probe through the deployed code paths: decode -> detect/align/quality gate -> embed -> gallery search.

The functions are the services' own: :func:`rfr.core.imaging.decode_image` (ingest), :func:`rfr.face.faces.find_faces`
(detect), the embed service's embedder and the match service's gallery search. A probe whose image is refused,
or in which no face passes the quality gate, is not searched (an empty candidate list, ``failure`` says why).

Which face a probe contributes: in a synthetic scene the one whose centre is nearest the known face (within half
a face width; another face is a miss); in a photo the largest accepted face, as enrolment keeps. When only a
gated face is there, it is aligned (:func:`rfr.face.align.align_face`, as find_faces does), embedded and
searched anyway into ``ungated_candidates``: what the quality gate costs is then measurable (the deployed
pipeline's result, ``candidates``, stays empty).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import numpy.typing as npt

from rfr.core.geometry import Box
from rfr.core.imaging import ImageLimits, ImageRejected, decode_image
from rfr.core.schemas import FaceQuality
from rfr.face.align import align_face
from rfr.face.faces import FaceFindings, FoundFace, RejectedFace, find_faces
from rfr.gallery.openset import Candidates, Search, aggregate_by_subject
from rfr.tools.eval.scenes import background_pool, encode_png, make_scene, offset_from_truth, scene_rng
from rfr.tools.eval.splits import Probe

if TYPE_CHECKING:
    from rfr.core.settings import DetectSettings
    from rfr.embedding.embedder import Embedder
    from rfr.face.detector import Detector
    from rfr.gallery.base import Gallery

Face = TypeVar("Face", FoundFace, RejectedFace)

logger = logging.getLogger(__name__)

ORIGINAL = "original"
"""The condition of the probe photos as they are (every other condition is a named degradation level)."""

FAIL_DECODE = "decode"
FAIL_NO_FACE = "no_face"
FAIL_LOW_QUALITY = "low_quality"
FAILURES = (FAIL_DECODE, FAIL_NO_FACE, FAIL_LOW_QUALITY)


@dataclass(frozen=True)
class ProbeOutcome:
    """What one probe gave in one condition."""

    sample_id: str
    subject: str
    mated: bool
    half: str
    condition: str
    candidates: Candidates = ()
    failure: str | None = None
    face_px: float | None = None
    sharpness: float | None = None
    ungated_candidates: Candidates = ()

    def search(self) -> Search:
        """The search as the deployed pipeline runs it (gated faces are not searched)."""
        return Search(self.subject, self.mated, self.candidates)

    def ungated_search(self) -> Search:
        """The search had the quality gate let every detected face through."""
        return Search(self.subject, self.mated, self.ungated_candidates)


@dataclass
class StageTimes:
    """Seconds spent per stage (``scene`` is the synthetic degradation, not part of the pipeline; embed and
    search count only the faces the deployed pipeline searches, not the gated ones searched for the report)."""

    stills: int = 0
    scene: float = 0.0
    decode: float = 0.0
    detect: float = 0.0
    embed: float = 0.0
    search: float = 0.0

    @property
    def pipeline(self) -> float:
        return self.decode + self.detect + self.embed + self.search

    def to_dict(self) -> dict[str, float | int | None]:
        per = self.pipeline / self.stills if self.stills else None
        return {
            "stills": self.stills, "scene_s": round(self.scene, 3), "decode_s": round(self.decode, 3),
            "detect_s": round(self.detect, 3), "embed_s": round(self.embed, 3), "search_s": round(self.search, 3),
            "pipeline_s": round(self.pipeline, 3), "ms_per_still": round(1000 * per, 2) if per else None,
            "stills_per_s": round(1 / per, 2) if per else None,
        }


@dataclass
class FoundProbe:
    """A probe's face, found: its aligned crop (None when none was found), quality and why it is not searched."""

    probe: Probe
    crop: npt.NDArray[np.uint8] | None = None
    quality: FaceQuality | None = None
    failure: str | None = None


@dataclass
class Condition:
    """How the probe images are presented: as they are (``level`` None) or as degraded synthetic scenes."""

    name: str
    level: str | None = None
    face_px: float = 48.0
    scene_size: tuple[int, int] = (640, 480)
    seed: int = 0
    backgrounds: int = 32  # a seeded pool of scene textures, one picked per scene
    _pool: list[npt.NDArray[np.uint8]] = field(default_factory=list, repr=False)

    def background(self, rng: np.random.Generator) -> npt.NDArray[np.uint8]:
        if not self._pool:
            self._pool = background_pool(self.scene_size, self.backgrounds, self.seed)
        return self._pool[int(rng.integers(len(self._pool)))]


@dataclass
class ProbeRunner:
    """Runs probes in batches (one embedding call and one search call per batch)."""

    detector: Detector
    detect_settings: DetectSettings
    embedder: Embedder
    gallery: Gallery
    watch_list: str
    subjects: dict[str, str]  # identity -> subject id
    top_k: int
    limits: ImageLimits = field(default_factory=ImageLimits)
    framing: dict[str, Box | None] = field(default_factory=dict)  # sample id -> face box in the photo
    framer: Detector | None = None
    """The detector whose box in the original photo frames the probe's scenes (:func:`rfr.tools.eval.runner.
    framing_detector`: the reference), so every detector under test is measured on the same pixels; None: the
    detector under test frames them itself."""

    def run(self, probes: Sequence[Probe], condition: Condition, times: StageTimes) -> list[ProbeOutcome]:
        pending = [self.find(p, condition, times) for p in probes]
        # searched faces first, then the gated ones (searched only for the ungated figures)
        faced = sorted((p for p in pending if p.crop is not None), key=lambda p: p.failure is not None)
        results = self._search(faced, sum(p.failure is None for p in faced), times)
        by_id = {id(p): c for p, c in zip(faced, results, strict=True)}
        times.stills += len(probes)
        return [self._outcome(p, condition, by_id.get(id(p), ())) for p in pending]

    def _search(self, faced: Sequence[FoundProbe], deployed: int, times: StageTimes) -> list[Candidates]:
        """Embed and search every crop; only the first ``deployed`` count towards the pipeline's time."""
        if not faced:
            return []
        started = time.perf_counter()
        vectors = np.asarray(self.embedder.embed(np.stack([p.crop for p in faced if p.crop is not None])), np.float32)
        times.embed += (time.perf_counter() - started) * deployed / len(faced)
        started = time.perf_counter()
        rows = self.gallery.search(vectors, self.top_k, [self.watch_list], -1.0)
        times.search += (time.perf_counter() - started) * deployed / len(faced)
        return [aggregate_by_subject(((h.subject_id, h.score) for h in row), self.top_k) for row in rows]

    def _outcome(self, pending: FoundProbe, condition: Condition, found: Candidates) -> ProbeOutcome:
        probe, quality = pending.probe, pending.quality
        return ProbeOutcome(
            sample_id=probe.sample.sample_id, subject=self.subjects[probe.sample.identity], mated=probe.mated,
            half=probe.half, condition=condition.name, candidates=found if pending.failure is None else (),
            failure=pending.failure, face_px=quality.face_px if quality else None,
            sharpness=quality.sharpness if quality else None, ungated_candidates=found,
        )

    def find(self, probe: Probe, condition: Condition, times: StageTimes) -> FoundProbe:
        """Decode (after making the scene), detect and pick the probe's face; nothing embedded or searched.

        Run the ORIGINAL condition first: a scene frames the face from its detection in the original photo."""
        try:
            data = probe.sample.path.read_bytes()
        except OSError:
            logger.exception("probe %s unreadable", probe.sample.path)
            return FoundProbe(probe, failure=FAIL_DECODE)
        truth: Box | None = None
        if condition.level is not None:
            started = time.perf_counter()
            made = self._scene(probe, data, condition)
            times.scene += time.perf_counter() - started
            if made is None:
                return FoundProbe(probe, failure=FAIL_DECODE)
            data, truth = made
        started = time.perf_counter()
        try:
            rgb = decode_image(data, self.limits).rgb
        except ImageRejected as exc:
            logger.warning("probe %s refused: %s", probe.sample.sample_id, exc)
            times.decode += time.perf_counter() - started
            return FoundProbe(probe, failure=FAIL_DECODE)
        times.decode += time.perf_counter() - started
        started = time.perf_counter()
        findings = find_faces(rgb, self.detector, self.detect_settings)
        times.detect += time.perf_counter() - started
        face, failure = choose_probe_face(findings, truth)
        if condition.level is None:
            self.framing[probe.sample.sample_id] = self._frame(rgb, face)
        if face is None:
            return FoundProbe(probe, failure=failure)
        if isinstance(face, RejectedFace):
            crop = align_face(rgb, face.detection, self.detect_settings.crop_size, self.detect_settings.crop_margin)
            return FoundProbe(probe, crop, face.quality, failure)
        return FoundProbe(probe, face.crop, face.quality)

    def _frame(self, rgb: npt.NDArray[np.uint8], face: FoundFace | RejectedFace | None) -> Box | None:
        """The face box that frames a photo's scenes: the framer's choice of face, else the probe's own."""
        if self.framer is not None:
            face, _ = choose_probe_face(find_faces(rgb, self.framer, self.detect_settings), None)
        return face.detection.box if face is not None else None

    def _scene(self, probe: Probe, data: bytes, condition: Condition) -> tuple[bytes, Box] | None:
        try:
            photo = decode_image(data, self.limits).rgb
        except ImageRejected:
            return None
        rng = scene_rng(condition.seed, condition.name, probe.sample.sample_id)
        frame = self.framing.get(probe.sample.sample_id)
        scene, truth = make_scene(photo, frame, condition.level or "clean", condition.face_px, condition.scene_size,
                                  rng, condition.background(rng))
        return encode_png(scene), truth


def _pick(faces: Sequence[Face], truth: Box | None, max_offset: float) -> Face | None:
    """Nearest to the known face (within ``max_offset`` face widths), or the largest when none is known."""
    if truth is None:
        return max(faces, key=lambda f: f.detection.box.area, default=None)
    near = [f for f in faces if offset_from_truth(f.detection.box, truth) <= max_offset]
    return min(near, key=lambda f: offset_from_truth(f.detection.box, truth), default=None)


def choose_probe_face(findings: FaceFindings, truth: Box | None,
                      max_offset: float = 0.5) -> tuple[FoundFace | RejectedFace | None, str | None]:
    """The face a probe contributes and why it is not searched (None: it is); a gated face comes with
    :data:`FAIL_LOW_QUALITY`, no face at all (or none at the known place) with :data:`FAIL_NO_FACE`."""
    accepted = _pick(findings.accepted, truth, max_offset)
    if accepted is not None:
        return accepted, None
    gated = _pick(findings.rejected, truth, max_offset)
    return gated, FAIL_NO_FACE if gated is None else FAIL_LOW_QUALITY
