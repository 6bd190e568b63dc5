"""Who is in the gallery, who probes it, and which probes calibrate the threshold.

Two ways to get a split:

* :func:`from_folders`: a gallery folder and a probe folder, one sub-folder per identity. A probe is
  *mated* when its identity has a gallery folder; the other probe identities are deliberately absent.
* :func:`from_labelled`: one labelled folder (such as LFW). Seeded: a set of identities (single-image ones
  included, or with ``strangers="singles"`` single-image ones only) is held out as non-enrolled probes; of the
  rest, identities with >= 2 images put their first image (sorted by name) in the gallery and the next ones (at
  most ``max_probes_per_id``) in the probes; optionally more single-image identities join the gallery as
  distractors (enrolled, never probed). The identities the embedder's fine-tune was trained on
  (:func:`rfr.tools.train.split.training_identities`) are left out whenever they are present: an evaluation
  never measures faces a model was trained on (issue #17).

Every probe identity is assigned, by a seeded hash of its name, to the CALIBRATION or the EVALUATION half,
so a threshold is chosen on one half and measured on the other (never tuned on what it is measured on).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from rfr.core.image_files import identity_folders

logger = logging.getLogger(__name__)

CALIBRATION = "calibration"
EVALUATION = "evaluation"


@dataclass(frozen=True)
class Sample:
    identity: str
    path: Path

    @property
    def sample_id(self) -> str:
        return f"{self.identity}/{self.path.name}"


@dataclass(frozen=True)
class Probe:
    sample: Sample
    mated: bool
    half: str  # CALIBRATION or EVALUATION


@dataclass(frozen=True)
class Split:
    gallery: tuple[Sample, ...]
    probes: tuple[Probe, ...]
    description: str

    @property
    def gallery_identities(self) -> frozenset[str]:
        return frozenset(s.identity for s in self.gallery)

    def summary(self) -> dict[str, int]:
        mated = [p for p in self.probes if p.mated]
        return {
            "gallery_images": len(self.gallery),
            "gallery_identities": len(self.gallery_identities),
            "probes": len(self.probes),
            "mated_probes": len(mated),
            "nonmated_probes": len(self.probes) - len(mated),
            "probe_identities": len({p.sample.identity for p in self.probes}),
            "nonmated_identities": len({p.sample.identity for p in self.probes if not p.mated}),
            "calibration_probes": sum(p.half == CALIBRATION for p in self.probes),
            "evaluation_probes": sum(p.half == EVALUATION for p in self.probes),
        }


def half_of(identity: str, seed: int) -> str:
    """CALIBRATION or EVALUATION, from a seeded hash of the identity (stable across runs and machines)."""
    digest = hashlib.sha256(f"{seed}:{identity}".encode()).digest()
    return CALIBRATION if digest[0] % 2 == 0 else EVALUATION


def from_folders(gallery_dir: Path, probes_dir: Path, seed: int = 0, max_probes_per_id: int | None = None) -> Split:
    gallery_ids = identity_folders(gallery_dir)
    probe_ids = identity_folders(probes_dir)
    if not gallery_ids:
        raise ValueError(f"no identity folders with images under {gallery_dir}")
    if not probe_ids:
        raise ValueError(f"no identity folders with images under {probes_dir}")
    gallery = tuple(Sample(i, p) for i, paths in gallery_ids.items() for p in paths)
    probes = tuple(
        Probe(Sample(i, p), i in gallery_ids, half_of(i, seed))
        for i, paths in probe_ids.items()
        for p in paths[:max_probes_per_id]
    )
    return Split(gallery, probes, f"gallery {gallery_dir}, probes {probes_dir}")


@dataclass(frozen=True)
class LabelledPlan:
    """How many identities :func:`from_labelled` takes (None: all that are left)."""

    enrolled: int | None = 200
    nonmated: int = 200
    distractors: int = 0
    max_probes_per_id: int = 2
    seed: int = 0
    strangers: Literal["any", "singles"] = "any"  # who the non-enrolled probes are drawn from
    exclude: frozenset[str] = frozenset()  # identities never used (the training identities)


def _pick(rng: np.random.Generator, pool: Sequence[str], n: int | None) -> list[str]:
    if n is None or n >= len(pool):
        return list(pool)
    return sorted(str(x) for x in rng.choice(np.asarray(pool), size=n, replace=False))


def from_labelled(root: Path, plan: LabelledPlan) -> Split:
    every_id = identity_folders(root)
    ids = {k: v for k, v in every_id.items() if k not in plan.exclude}
    rng = np.random.default_rng(plan.seed)
    everyone = sorted(ids)
    pool = everyone if plan.strangers == "any" else [i for i in everyone if len(ids[i]) == 1]
    held_out = set(_pick(rng, pool, plan.nonmated))
    multi = [i for i in everyone if i not in held_out and len(ids[i]) >= 2]
    singles = [i for i in everyone if i not in held_out and len(ids[i]) == 1]
    enrolled = _pick(rng, multi, plan.enrolled)
    distractors = _pick(rng, singles, plan.distractors) if plan.distractors else []
    if not enrolled:
        raise ValueError(f"no identity under {root} has two or more images to enrol and probe")
    cap = plan.max_probes_per_id
    gallery = tuple(Sample(i, ids[i][0]) for i in sorted([*enrolled, *distractors]))
    probes = [Probe(Sample(i, p), True, half_of(i, plan.seed)) for i in enrolled for p in ids[i][1 : 1 + cap]]
    probes += [Probe(Sample(i, p), False, half_of(i, plan.seed)) for i in sorted(held_out) for p in ids[i][:cap]]
    description = (
        f"{root}: seed {plan.seed}, {len(enrolled)} enrolled identities (first image to the gallery, "
        f"up to {cap} more as probes), {len(distractors)} gallery-only distractors, {len(held_out)} "
        f"non-enrolled identities ({'single-image ones, ' if plan.strangers == 'singles' else ''}up to {cap} "
        f"images each as probes); {len(every_id) - len(ids)} training identities left out"
    )
    logger.info("split: %s", description)
    return Split(gallery, tuple(probes), description)
