"""Multi-still incidents: rank-1 and open-set rates of one still against the fused template of K. JSON out.

    flock /tmp/rfr-heavy.lock .venv/bin/python -m benchmarks.bench_incidents --labelled ../shared/faces/lfw --stills 3

On labelled faces (LFW-style, a folder per identity), without the training identities of
:func:`rfr.tools.train.split.training_identities`: identities with at least K+1 photos are mated incidents
(photo 0 enrolled, photos 1..K the stills), other identities with at least K photos are stranger incidents
(never enrolled); single-photo identities are enrolled as distractors. Each still is a CCTV-like frame
(``--face-px`` faces in a ``--scene`` frame, ``--level`` degradation: :func:`rfr.tools.degrade.place_in_scene`),
detected, aligned and embedded with the product's own code (:func:`rfr.face.faces.find_faces`, the configured
detector and embedder). Old and new in the same run, on the same crops: ``single`` searches each still alone
(today), ``fused`` one template per incident, the mean of its stills' unit templates renormalised
(:func:`rfr.embedding.incidents.fuse_templates`). Reported at the shipped review threshold (``match.threshold``,
not tuned here): rank-1, TPIR (right subject first and at or above the threshold) and FPIR (a stranger's probe
with any candidate). A still without a usable face is a miss for its own single search and leaves the incident's
fused template to the other stills.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from rfr.core.image_files import identity_folders
from rfr.core.imaging import ImageLimits, decode_image, encode_jpeg
from rfr.core.settings import load_settings
from rfr.embedding.embedder import load_embedder
from rfr.embedding.incidents import fuse_templates
from rfr.face.faces import find_faces
from rfr.face.runners import make_detector
from rfr.tools.degrade import place_in_scene
from rfr.tools.train.split import training_identities

Vec = npt.NDArray[np.float32]


def _rgb(path: Path) -> npt.NDArray[np.uint8]:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read {path}")
    return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)


def _split(root: Path, stills: int, incidents: int, distractors: int,
           seed: int) -> tuple[list[tuple[Path, list[Path]]], list[list[Path]], list[Path]]:
    """(mated: enrolled photo and ``stills`` other photos), (strangers: ``stills`` photos), distractor photos."""
    people = {n: sorted(p) for n, p in identity_folders(root).items()}
    excluded = training_identities(root)
    rng = np.random.default_rng(seed)
    pool = sorted(n for n, p in people.items() if len(p) >= stills + 1 and n not in excluded)
    rng.shuffle(pool)
    mated = pool[:incidents]
    others = sorted(n for n, p in people.items() if len(p) >= stills and n not in excluded and n not in mated)
    rng.shuffle(others)
    singles = sorted(n for n, p in people.items() if len(p) == 1 and n not in excluded)
    chosen = sorted(rng.choice(len(singles), size=min(distractors, len(singles)), replace=False))
    return ([(people[n][0], people[n][1:stills + 1]) for n in mated], [people[n][:stills] for n in others[:incidents]],
            [people[singles[i]][0] for i in chosen])


class Crops:
    """Detect and align with the product's code; embed in batches."""

    def __init__(self, settings_model_dir: Path) -> None:
        self.settings = load_settings()
        self.detector = make_detector(self.settings.detect, settings_model_dir)
        self.embedder = load_embedder(self.settings.embed, settings_model_dir)
        self.limits = ImageLimits.from_settings(self.settings.ingest)

    def face(self, rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8] | None:
        """The largest usable face's aligned crop, None when the gate passes none."""
        found = find_faces(rgb, self.detector, self.settings.detect)
        return found.accepted[0].crop if found.accepted else None

    def embed(self, crops: list[npt.NDArray[np.uint8]]) -> Vec:
        out = [self.embedder.embed(np.stack(crops[i:i + 32])) for i in range(0, len(crops), 32)]
        vectors = np.concatenate(out) if out else np.zeros((0, 512), np.float32)
        unit: Vec = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
        return unit


def _scene(crops: Crops, photo: Path, args: argparse.Namespace, rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    scene, _ = place_in_scene(_rgb(photo), args.face_px, tuple(args.scene), args.level, rng)
    return decode_image(encode_jpeg(scene, 90), crops.limits).rgb  # as ingest and detect see it


def _probes(crops: Crops, incidents: list[list[Path]], args: argparse.Namespace,
            rng: np.random.Generator) -> list[list[Vec | None]]:
    """Per incident, per still: its template, None without a usable face."""
    faces = [[crops.face(_scene(crops, photo, args, rng)) for photo in photos] for photos in incidents]
    flat = [f for still in faces for f in still if f is not None]
    vectors = iter(crops.embed(flat))
    return [[next(vectors) if f is not None else None for f in still] for still in faces]


def _top(gallery: Vec, subjects: list[str], probe: Vec | None) -> tuple[str | None, float]:
    if probe is None:
        return None, -1.0
    scores = gallery @ probe
    best = int(np.argmax(scores))
    return subjects[best], float(scores[best])


def _rates(found: list[tuple[str | None, float]], truth: list[str | None], threshold: float) -> dict[str, float]:
    mated = [(f, t) for f, t in zip(found, truth, strict=True) if t is not None]
    strangers = [f for f, t in zip(found, truth, strict=True) if t is None]
    return {
        "rank1": round(sum(s == t for (s, _), t in mated) / len(mated), 4),
        "tpir": round(sum(s == t and score >= threshold for (s, score), t in mated) / len(mated), 4),
        "fpir": round(sum(score >= threshold for _, score in strangers) / max(1, len(strangers)), 4),
        "mated": len(mated), "nonmated": len(strangers),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labelled", type=Path, required=True)
    parser.add_argument("--stills", type=int, default=3, help="stills per incident")
    parser.add_argument("--incidents", type=int, default=150, help="mated incidents at most (as many strangers)")
    parser.add_argument("--distractors", type=int, default=600, help="single-photo identities enrolled")
    parser.add_argument("--face-px", type=int, default=40)
    parser.add_argument("--scene", type=int, nargs=2, default=(1920, 1080))
    parser.add_argument("--level", default="mild")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    settings = load_settings()
    crops = Crops(settings.model_dir)
    mated, strangers, singles = _split(args.labelled, args.stills, args.incidents, args.distractors, args.seed)
    found = [(p.parent.name, crops.face(_rgb(p))) for p, _ in mated] + [
        (p.parent.name, crops.face(_rgb(p))) for p in singles]
    enrol = [(s, c) for s, c in found if c is not None]
    gallery = crops.embed([c for _, c in enrol])
    subjects = [s for s, _ in enrol]
    rng = np.random.default_rng(args.seed + 1)
    truth = [p.parent.name for p, _ in mated] + [None] * len(strangers)
    stills = _probes(crops, [s for _, s in mated] + strangers, args, rng)
    single = [_top(gallery, subjects, v) for incident in stills for v in incident]
    single_truth = [t for t, incident in zip(truth, stills, strict=True) for _ in incident]
    fused = [_top(gallery, subjects, fuse_templates([v for v in incident if v is not None])
                  if any(v is not None for v in incident) else None) for incident in stills]
    threshold = settings.match.threshold
    print(json.dumps({
        "benchmark": "incidents", "stills_per_incident": args.stills, "labelled": str(args.labelled),
        "face_px": args.face_px, "scene": args.scene,
        "level": args.level, "seed": args.seed, "threshold": threshold, "gallery": len(subjects),
        "stills_without_face": sum(v is None for incident in stills for v in incident),
        "single_still": _rates(single, single_truth, threshold),
        "fused_incident": _rates(fused, truth, threshold),
        "detector": settings.detect.detector, "embed_model": crops.embedder.model_id,
        "seconds": round(time.perf_counter() - started, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
