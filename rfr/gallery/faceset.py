"""Embed sets of labelled photos (calibration, evaluation) through the probes' path, with an optional cache."""

from __future__ import annotations

import csv
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from rfr.embedding.protocol import Embedder
from rfr.gallery.calibrate import LabelledVectors, Scores
from rfr.gallery.extraction import Crop, ExtractionRejected, FaceExtractor, MultiFacePolicy, choose_face

logger = logging.getLogger(__name__)


@dataclass
class Embedded:
    """Vectors of the photos that gave a face; ``rows[i]`` is the index in the input of ``vectors[i]``."""

    vectors: npt.NDArray[np.float32]
    rows: list[int]
    rejected: dict[str, int] = field(default_factory=dict)


def embed_paths(paths: Sequence[Path], extractor: FaceExtractor, embedder: Embedder, *,
                multi_face: MultiFacePolicy = "largest", batch_size: int = 32,
                progress: Callable[[int], None] | None = None) -> Embedded:
    """One vector per photo with a usable face (``largest`` by default, as enrolment does)."""
    vectors: list[npt.NDArray[np.float32]] = []
    rows: list[int] = []
    rejected: dict[str, int] = {}
    for start in range(0, len(paths), batch_size):
        crops: list[Crop] = []
        for i, path in enumerate(paths[start:start + batch_size], start=start):
            try:
                crops.append(choose_face(extractor.extract(path.read_bytes()), multi_face).face.crop)
                rows.append(i)
            except ExtractionRejected as exc:
                rejected[exc.reason] = rejected.get(exc.reason, 0) + 1
            except OSError:
                rejected["unreadable"] = rejected.get("unreadable", 0) + 1
        if crops:
            vectors.append(np.asarray(embedder.embed(np.stack(crops)), dtype=np.float32))
        if progress:
            progress(len(paths[start:start + batch_size]))
    dim = embedder.dim
    return Embedded(np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32), rows, rejected)


def embed_labelled(photos: dict[str, list[Path]], extractor: FaceExtractor, embedder: Embedder, *,
                   cache: Path | None = None, batch_size: int = 32,
                   progress: Callable[[int], None] | None = None) -> tuple[LabelledVectors, dict[str, int]]:
    """Embeddings of ``identity -> photos``; re-used from ``cache`` (.npz) when it holds the same photos and model."""
    names = sorted(photos)
    paths = [p for n in names for p in photos[n]]
    labels = np.array([k for k, n in enumerate(names) for _ in photos[n]], dtype=np.int64)
    key = _cache_key(embedder.model_id, embedder.weights_sha256, paths)
    if cache is not None and cache.exists():
        with np.load(cache, allow_pickle=False) as npz:
            if str(npz["key"]) == key:
                logger.info("embeddings from cache %s", cache)
                rows = npz["rows"].astype(np.int64)
                data = LabelledVectors(npz["vectors"], labels[rows], names, [str(paths[r]) for r in rows])
                return data, {}
    out = embed_paths(paths, extractor, embedder, batch_size=batch_size, progress=progress)
    rows = np.asarray(out.rows, dtype=np.int64)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, key=np.array(key), vectors=out.vectors, rows=rows)
    return LabelledVectors(out.vectors, labels[rows], names, [str(paths[r]) for r in rows]), out.rejected


def _cache_key(model_id: str, weights: str, paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for part in (model_id, weights, *map(str, paths)):
        digest.update(part.encode() + b"\x00")
    return digest.hexdigest()


@dataclass(frozen=True)
class Pair:
    a: Path
    b: Path
    same: bool
    split: str


def read_pairs(path: Path) -> list[Pair]:
    """CSV ``path_a,path_b,same[,split]`` (paths relative to the CSV's folder; same: 1/0/true/false)."""
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not {"path_a", "path_b", "same"} <= set(reader.fieldnames or []):
            raise ValueError(f"{path}: need columns path_a, path_b, same (got {reader.fieldnames})")
        return [Pair(path.parent / row["path_a"], path.parent / row["path_b"],
                     row["same"].strip().lower() in ("1", "true", "yes"),
                     (row.get("split") or "calibration").strip() or "calibration") for row in reader]


def pairs_scores(pairs: Sequence[Pair], extractor: FaceExtractor, embedder: Embedder, *, batch_size: int = 32,
                 progress: Callable[[int], None] | None = None) -> dict[str, tuple[Scores, Scores]]:
    """split -> (genuine, impostor) cosine scores; pairs where either photo gave no face are left out."""
    unique = sorted({p.a for p in pairs} | {p.b for p in pairs})
    out = embed_paths(unique, extractor, embedder, batch_size=batch_size, progress=progress)
    index = {unique[r]: k for k, r in enumerate(out.rows)}
    acc: dict[str, tuple[list[float], list[float]]] = {}
    for p in pairs:
        if p.a in index and p.b in index:
            score = float(out.vectors[index[p.a]] @ out.vectors[index[p.b]])
            genuine, impostor = acc.setdefault(p.split, ([], []))
            (genuine if p.same else impostor).append(score)
    return {k: (np.asarray(g, dtype=np.float64), np.asarray(i, dtype=np.float64)) for k, (g, i) in acc.items()}
