"""An evaluation run, in process: enrol the gallery, search every probe in every condition, keep the outcomes.

    run = run_eval(settings, split, EvalOptions(levels=("mild",), face_px=48))
    write_report(build_report(run), out_dir)   # rfr.tools.eval.report

Enrolment is the match service's :class:`rfr.gallery.enrol.Enroller` (decode, detect, align, gate, embed,
``largest`` face of a photo with several); probes go through :mod:`rfr.tools.eval.probes`. The gallery is the real
Milvus one on a milvus-lite server started for the run (see :mod:`rfr.tools.eval.gallery`).
"""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rfr.core.imaging import ImageLimits
from rfr.core.settings import Settings
from rfr.tools.eval.gallery import EVAL_WATCH_LIST, GalleryKind, open_eval_gallery, subject_id_for
from rfr.tools.eval.probes import ORIGINAL, Condition, ProbeOutcome, ProbeRunner, StageTimes
from rfr.tools.eval.splits import Probe, Split

if TYPE_CHECKING:
    from rfr.embedding.embedder import FacenetEmbedder
    from rfr.face.detector import Detector
    from rfr.gallery.base import Gallery

logger = logging.getLogger(__name__)

REFERENCE_DETECTOR = "mediapipe"
"""``detect.detector`` of the reference detector (MediaPipe Tasks over the tile pyramid, rfr/face/detector.py)."""

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True)
class EvalOptions:
    levels: tuple[str, ...] = ()
    face_px: float = 48.0
    scene_size: tuple[int, int] = (640, 480)
    seed: int = 0
    ranks: tuple[int, ...] = (1, 5, 10)
    fpir_targets: tuple[float, ...] = (0.1, 0.01, 0.001)
    ship_fpir: float = 0.01
    gallery: GalleryKind = "milvus"
    milvus_uri: str | None = None
    batch_size: int = 32
    command: str = ""
    ablation: bool = False  # detect once, then every issue-#17 lever on the same crops (rfr/tools/eval/ablation.py)
    crops_cache: Path | None = None  # --ablation: keep the found crops here for a re-run (a local pickle)

    @property
    def conditions(self) -> list[Condition]:
        return [Condition(ORIGINAL)] + [
            Condition(level, level, self.face_px, self.scene_size, self.seed) for level in self.levels
        ]


@dataclass
class EvalRun:
    split: Split
    options: EvalOptions
    outcomes: list[ProbeOutcome] = field(default_factory=list)
    enrolment: dict[str, Any] = field(default_factory=dict)
    times: dict[str, StageTimes] = field(default_factory=dict)
    system: dict[str, Any] = field(default_factory=dict)
    started_at: str = ""
    seconds: float = 0.0
    ablation: dict[str, Any] | None = None

    def by_condition(self, name: str) -> list[ProbeOutcome]:
        return [o for o in self.outcomes if o.condition == name]


def _system(settings: Settings, embedder: FacenetEmbedder, gallery_kind: str) -> dict[str, Any]:
    return {
        "python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
        "loadavg_at_start": [round(v, 2) for v in os.getloadavg()],
        "embedder": embedder.model_id, "weights_sha256": embedder.weights_sha256,
        "embed_runtime": embedder.runtime.describe(), "detector": f"blazeface short-range ({settings.detect.detector})",
        "detect_settings": settings.detect.model_dump(mode="json"),
        "gallery": gallery_kind,
        "milvus_index": settings.milvus.index_type if gallery_kind == "milvus" else "exact",
    }


def enrol(settings: Settings, split: Split, gallery: Gallery, embedder: FacenetEmbedder,
          batch_size: int) -> dict[str, Any]:
    from rfr.gallery.enrol import EnrolItem, Enroller
    from rfr.gallery.extraction import PipelineExtractor

    items = [EnrolItem(subject_id_for(s.identity), s.path, s.sample_id) for s in split.gallery]
    extractor = PipelineExtractor(settings)
    try:
        report = Enroller(extractor, embedder, gallery, EVAL_WATCH_LIST, multi_face="largest",
                          batch_size=batch_size).run(items)
    finally:
        extractor.close()
    out = report.to_dict()
    return {k: out[k] for k in ("images", "enrolled", "rejected", "rejected_by_reason", "warnings",
                                "subjects_enrolled", "seconds", "images_per_s")}


@contextmanager
def eval_detector(settings: Settings) -> Iterator[Detector]:
    """The detector the detect service runs (``detect.detector``, :func:`rfr.face.runners.make_detector`), closed
    after the block."""
    from rfr.face.detector import close_detector
    from rfr.face.runners import make_detector

    detector = make_detector(settings.detect, settings.model_dir)
    try:
        yield detector
    finally:
        close_detector(detector)


@contextmanager
def framing_detector(settings: Settings, scenes: bool = True) -> Iterator[Detector | None]:
    """The detector that frames the probes' scenes (:attr:`ProbeRunner.framer`): the reference, MediaPipe Tasks,
    whichever detector is evaluated, so two detectors compared on one split see the same scenes, pixel for pixel
    (framed by the detector under test, a scene's face moved with that detector's box: litert's boxes are ~1 %
    wider than the reference's). None when the reference is the detector under test, or when no condition makes
    scenes (``scenes`` false: nothing to frame)."""
    if not scenes or settings.detect.detector == REFERENCE_DETECTOR:
        yield None
        return
    reference = settings.model_copy(update={"detect": settings.detect.model_copy(
        update={"detector": REFERENCE_DETECTOR})})
    with eval_detector(reference) as framer:
        yield framer


def run_eval(settings: Settings, split: Split, options: EvalOptions, progress: Progress | None = None) -> EvalRun:
    """Enrol ``split.gallery`` into a fresh gallery and search every probe in every condition."""
    from rfr.embedding.embedder import load_embedder

    run = EvalRun(split, options, started_at=datetime.now(UTC).isoformat(timespec="seconds"))
    started = time.perf_counter()
    embedder = load_embedder(settings.embed, settings.model_dir).load()
    run.system = _system(settings, embedder, options.gallery)
    if options.ablation:
        from rfr.tools.eval.ablation import run_ablation

        run.system |= {"gallery": "exact (NumPy, --ablation)", "milvus_index": "exact"}
        run_ablation(settings, run, progress)
        run.seconds = time.perf_counter() - started
        run.system["loadavg_at_end"] = [round(v, 2) for v in os.getloadavg()]
        return run
    with open_eval_gallery(options.gallery, settings.milvus, embedder.model_id, embedder.weights_sha256,
                           options.milvus_uri) as gallery:
        run.enrolment = enrol(settings, split, gallery, embedder, options.batch_size)
        logger.info("enrolled %s of %s gallery images", run.enrolment["enrolled"], run.enrolment["images"])
        with eval_detector(settings) as detector, framing_detector(settings, bool(options.levels)) as framer:
            runner = ProbeRunner(
                detector, settings.detect, embedder, gallery, EVAL_WATCH_LIST,
                {p.sample.identity: subject_id_for(p.sample.identity) for p in split.probes},
                top_k=max(options.ranks), limits=ImageLimits.from_settings(settings.ingest), framer=framer,
            )
            for condition in options.conditions:
                run.times[condition.name] = StageTimes()
                run.outcomes += _run_condition(runner, split.probes, condition, run.times[condition.name],
                                               options.batch_size, progress)
    run.seconds = time.perf_counter() - started
    run.system["loadavg_at_end"] = [round(v, 2) for v in os.getloadavg()]
    return run


def _run_condition(runner: ProbeRunner, probes: Sequence[Probe], condition: Condition, times: StageTimes,
                   batch_size: int, progress: Progress | None) -> list[ProbeOutcome]:
    out: list[ProbeOutcome] = []
    for start in range(0, len(probes), batch_size):
        out += runner.run(probes[start : start + batch_size], condition, times)
        if progress is not None:
            progress(condition.name, len(out), len(probes))
    failed = sum(o.failure is not None for o in out)
    logger.info("condition %s: %d probes, %d not searched, %s", condition.name, len(out), failed, times.to_dict())
    return out
