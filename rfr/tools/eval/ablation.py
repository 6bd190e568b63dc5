"""``rfr eval --ablation``: every issue-#17 lever on the same faces, in one run.

Each probe is decoded, (scene-made,) detected and aligned ONCE per condition and each gallery, cohort and extra
template photo is extracted once (the services' own code, as in :mod:`rfr.tools.eval.probes`); then every
embedder variant embeds those same crops, and every scoring variant reads those same embeddings
(:mod:`rfr.tools.eval.levers`, exact search). The embedder variants are whatever this checkout's
:class:`rfr.core.settings.EmbedSettings` offers (``tta="mirror"``, other ``weights``); the scoring ones are
cohort T-norm (``MatchSettings.score_norm``), fused subject templates and the gallery-size threshold policy.

Where the cohort comes from: the calibration half's non-enrolled identities (their original photos through the
enrolment path), each probe's own identity left out of it; thresholds are calibrated on the calibration half and
everything is reported on the evaluation half, whose identities are neither in the cohort nor trained on.

The ordinary report comes from the ``today`` variant (today's settings, exact search instead of Milvus HNSW).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import pickle
import time
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from rfr.core.imaging import ImageLimits
from rfr.core.settings import Settings
from rfr.tools.eval import levers as lv
from rfr.tools.eval.ablation_report import evaluate_levers
from rfr.tools.eval.gallery import subject_id_for
from rfr.tools.eval.probes import FoundProbe, ProbeOutcome, ProbeRunner, StageTimes
from rfr.tools.eval.splits import CALIBRATION, Sample

if TYPE_CHECKING:
    from rfr.embedding.protocol import Embedder
    from rfr.gallery.extraction import Crop
    from rfr.tools.eval.runner import EvalOptions, EvalRun

logger = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]

CROPS_VERSION = "crops v2"
"""Part of the crop cache's key: changed whenever how probes are found changes beyond the settings the key holds
(v2: scenes framed by the reference detector; the gate reads each detection's own keypoints)."""


@dataclass(frozen=True)
class EmbedVariant:
    """An embedder: today's settings with ``update`` applied to ``EmbedSettings``."""

    name: str
    update: dict[str, Any] = field(default_factory=dict)


def embed_variants(settings: Settings) -> list[EmbedVariant]:
    """today, then each embedder lever this checkout has (mirror TTA, other weights), then all of them."""
    fields = type(settings.embed).model_fields
    levers: list[EmbedVariant] = []
    if "tta" in fields:
        levers.append(EmbedVariant("mirror TTA", {"tta": "mirror"}))
    for name in ("weights", "model"):  # the fine-tuned weights: a `weights` choice, or a `model` named *lowres*
        if name in fields:
            today = getattr(settings.embed, name)
            options = [v for v in typing.get_args(fields[name].annotation)
                       if v != today and (name == "weights" or "lowres" in str(v))]
            levers += [EmbedVariant(f"{name} {v}", {name: v}) for v in options]
    out = [EmbedVariant("today"), *levers]
    if len(levers) > 1:
        out.append(EmbedVariant("all embedder levers", {k: v for x in levers for k, v in x.update.items()}))
    return out


@dataclass
class Crops:
    """Everything the ablation embeds, found once."""

    gallery: list[tuple[str, Crop]]  # (subject, crop), one per enrolled gallery photo
    extra: dict[str, Crop]  # subject -> a second photo (its first probe photo, through enrolment)
    extra_sample_ids: frozenset[str]  # the probe photos used as those second photos
    cohort: list[tuple[str, Crop]]  # (identity, crop)
    probes: dict[str, list[FoundProbe]]  # condition -> one per split probe, in split order
    times: dict[str, StageTimes]
    enrolment: dict[str, Any]


def _extract(extractor: Any, samples: Sequence[Sample]) -> tuple[list[tuple[Sample, Crop]], dict[str, int]]:
    from rfr.gallery.extraction import ExtractionRejected, choose_face

    kept: list[tuple[Sample, Crop]] = []
    rejected: dict[str, int] = {}
    for s in samples:
        try:
            kept.append((s, choose_face(extractor.extract(s.path.read_bytes()), "largest").face.crop))
        except (ExtractionRejected, OSError) as exc:
            reason = getattr(exc, "reason", "unreadable")
            rejected[str(reason)] = rejected.get(str(reason), 0) + 1
    return kept, rejected


def find_crops(settings: Settings, run: EvalRun, progress: Progress | None) -> Crops:
    from rfr.gallery.extraction import PipelineExtractor
    from rfr.tools.eval.runner import eval_detector, framing_detector

    split, options = run.split, run.options
    by_id: dict[str, list[Sample]] = {}
    for p in split.probes:
        if p.mated:
            by_id.setdefault(p.sample.identity, []).append(p.sample)
    extra_samples = [ss[0] for ss in by_id.values() if len(ss) >= 2]
    cohort_samples = sorted({p.sample.identity: p.sample for p in split.probes
                             if not p.mated and p.half == CALIBRATION}.values(), key=lambda s: s.identity)
    started = time.perf_counter()
    extractor = PipelineExtractor(settings)
    try:
        gallery, rejected = _extract(extractor, split.gallery)
        extra, _ = _extract(extractor, extra_samples)
        cohort, _ = _extract(extractor, cohort_samples)
    finally:
        extractor.close()
    seconds = time.perf_counter() - started
    enrolment = {"images": len(split.gallery), "enrolled": len(gallery),
                 "rejected": len(split.gallery) - len(gallery), "rejected_by_reason": rejected, "warnings": 0,
                 "subjects_enrolled": len({s.identity for s, _ in gallery}), "seconds": round(seconds, 1),
                 "images_per_s": None}
    crops = Crops([(subject_id_for(s.identity), c) for s, c in gallery],
                  {subject_id_for(s.identity): c for s, c in extra}, frozenset(s.sample_id for s, _ in extra),
                  [(s.identity, c) for s, c in cohort], {}, {}, enrolment)
    with eval_detector(settings) as detector, framing_detector(settings, bool(options.levels)) as framer:
        runner = ProbeRunner(detector, settings.detect, None, None, "", {}, 1,  # type: ignore[arg-type]
                             limits=ImageLimits.from_settings(settings.ingest), framer=framer)
        for condition in options.conditions:
            times = crops.times.setdefault(condition.name, StageTimes())
            found: list[FoundProbe] = []
            for probe in split.probes:
                found.append(runner.find(probe, condition, times))
                if progress is not None and (len(found) % 100 == 0 or len(found) == len(split.probes)):
                    progress(condition.name, len(found), len(split.probes))
            times.stills = len(found)
            crops.probes[condition.name] = found
            logger.info("condition %s: %d probes found once (%s)", condition.name, len(found), times.to_dict())
    return crops


def _cache_key(settings: Settings, run: EvalRun) -> str:
    o = run.options
    parts = [run.split.description, *(p.sample.sample_id for p in run.split.probes), *(s.sample_id for s in
             run.split.gallery), repr((o.levels, o.face_px, o.scene_size, o.seed)),
             settings.detect.model_dump_json(), settings.ingest.model_dump_json(), CROPS_VERSION]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def cached_crops(settings: Settings, run: EvalRun, progress: Progress | None) -> Crops:
    """:func:`find_crops`, kept in ``options.crops_cache`` (a pickle this command wrote on this machine, keyed by
    the split, conditions and detect settings: never point it at a file from elsewhere)."""
    path = run.options.crops_cache
    key = _cache_key(settings, run)
    if path is not None and path.exists():
        with path.open("rb") as fh:
            held_key, crops = pickle.load(fh)  # our own cache, see the docstring
        if held_key == key:
            logger.info("crops from cache %s", path)
            return typing.cast(Crops, crops)
        logger.info("crops cache %s is for another run; finding the faces again", path)
    crops = find_crops(settings, run, progress)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as fh:
            pickle.dump((key, crops), fh, protocol=pickle.HIGHEST_PROTOCOL)
    return crops


def _embed(embedder: Embedder, crops: Sequence[Crop], batch: int) -> np.ndarray:
    if not crops:
        return np.zeros((0, embedder.dim), np.float32)
    parts = [np.asarray(embedder.embed(np.stack(crops[i:i + batch])), np.float32) for i in range(0, len(crops), batch)]
    return np.concatenate(parts)


def embed_all(settings: Settings, variant: EmbedVariant, crops: Crops, batch: int) -> dict[str, Any]:
    """Every crop embedded by one variant; ``probe_seconds`` times the probe crops only (faces/s)."""
    from rfr.embedding.embedder import load_embedder

    embedder = load_embedder(settings.embed.model_copy(update=variant.update), settings.model_dir).load()
    gallery = _embed(embedder, [c for _, c in crops.gallery], batch)
    extra = _embed(embedder, list(crops.extra.values()), batch)
    cohort = _embed(embedder, [c for _, c in crops.cohort], batch)
    probes: dict[str, lv.ProbeSet] = {}
    seconds, faces = 0.0, 0
    for name, found in crops.probes.items():
        faced = [f.crop for f in found if f.crop is not None]
        started = time.perf_counter()
        vectors = _embed(embedder, faced, batch)
        seconds += time.perf_counter() - started
        faces += len(faced)
        probes[name] = _probe_set(found, vectors, embedder.dim)
    subjects: dict[str, list[np.ndarray]] = {}
    for (subject, _), v in zip(crops.gallery, gallery, strict=True):
        subjects.setdefault(subject, []).append(v)
    one = lv.GalleryVectors(tuple(subjects), tuple(np.stack(v) for v in subjects.values()))
    extras = dict(zip(crops.extra, extra, strict=True))
    two = lv.GalleryVectors(one.subjects, tuple(np.vstack([r, extras[s]]) if s in extras else r
                                                for s, r in zip(one.subjects, one.rows, strict=True)))
    return {"model_id": embedder.model_id, "gallery": one, "gallery_two": two, "cohort": cohort,
            "probes": probes, "probe_seconds": seconds, "probe_faces": faces}


def _probe_set(found: Sequence[FoundProbe], vectors: np.ndarray, dim: int) -> lv.ProbeSet:
    full = np.zeros((len(found), dim), np.float32)
    rows = [i for i, f in enumerate(found) if f.crop is not None]
    if rows:
        full[rows] = vectors
    return lv.ProbeSet(full, tuple(subject_id_for(f.probe.sample.identity) for f in found),
                       tuple(f.probe.mated for f in found), tuple(f.probe.half for f in found),
                       tuple(f.crop is not None and f.failure is None for f in found),
                       tuple(f.probe.sample.identity for f in found), tuple(f.probe.sample.sample_id for f in found))


def outcomes(crops: Crops, embedded: dict[str, Any], top_k: int) -> list[ProbeOutcome]:
    """The ordinary report's outcomes: today's embedder and scoring, exact search."""
    out: list[ProbeOutcome] = []
    gallery: lv.GalleryVectors = embedded["gallery"]
    for name, found in crops.probes.items():
        probes: lv.ProbeSet = embedded["probes"][name]
        started = time.perf_counter()
        every = dataclasses.replace(probes, searched=tuple(f.crop is not None for f in found))
        ungated = lv.searches(every, lv.subject_scores(probes.vectors, gallery), gallery.subjects, top_k)
        crops.times[name].search += time.perf_counter() - started
        for f, s in zip(found, ungated, strict=True):
            q = f.quality
            out.append(ProbeOutcome(
                f.probe.sample.sample_id, s.true_subject, s.mated, f.probe.half, name,
                s.candidates if f.failure is None else (), f.failure, q.face_px if q else None,
                q.sharpness if q else None, s.candidates))
    return out


def run_ablation(settings: Settings, run: EvalRun, progress: Progress | None) -> None:
    """Fill ``run`` (outcomes, times, enrolment, ``ablation``) from one detection pass and every lever."""
    options: EvalOptions = run.options
    crops = cached_crops(settings, run, progress)
    run.enrolment = crops.enrolment
    embedded: dict[str, dict[str, Any]] = {}
    for variant in embed_variants(settings):
        try:
            embedded[variant.name] = embed_all(settings, variant, crops, options.batch_size)
        except Exception as exc:  # noqa: BLE001 - a variant whose weights are not provisioned is reported, not fatal
            logger.warning("embedder variant %s skipped: %s", variant.name, exc)
            continue
        logger.info("embedded with %s: %d probe faces in %.1fs", variant.name,
                    embedded[variant.name]["probe_faces"], embedded[variant.name]["probe_seconds"])
    today = embedded["today"]
    run.outcomes = outcomes(crops, today, max(options.ranks))
    for name, t in crops.times.items():
        t.embed = today["probe_seconds"] * sum(f.crop is not None for f in crops.probes[name]) / max(
            1, today["probe_faces"])
    run.times = crops.times
    run.ablation = evaluate_levers(embedded, crops.extra_sample_ids, [c[0] for c in crops.cohort], options)
