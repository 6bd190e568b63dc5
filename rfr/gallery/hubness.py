"""Hubness-corrected search (CSLS, ``match.score_norm=hubness``): a gallery search re-ranked on ``2 s - r_g``.

Some gallery photos are *hubs*, close to many faces at once; soft CCTV probes drift toward them, so they collect
strangers' best scores (docs/eval/README.md). CSLS (Conneau et al. 2018, "Word translation without parallel data")
reads a comparison of cosine ``s`` with gallery photo ``g`` as ``2 s - r_g``, where ``r_g`` is that photo's mean
cosine to its ``k`` nearest faces in a fixed cohort of CCTV-like faces of people not in the gallery
(:func:`rfr.gallery.scoring.template_hubness`). ``r_g`` depends only on the photo and the cohort, so it is
computed once per gallery photo and kept by face id; enrolling someone changes nobody else's.

A search here: the gallery is searched on cosines as usual, ``depth`` subjects deep (each subject its best photo),
the hit photos' vectors are read from the gallery (:meth:`rfr.gallery.base.Gallery.face_vectors`) the first time
they are seen, each hit is scored ``2 s - r_g``, held to its probe's threshold on that scale, and the first
``top_k`` by that score are the candidate list. Two bounds on how exact this is: a subject outside the ``depth``
best by cosine is never a candidate, and a subject with several photos is scored by its best photo by cosine (the
gallery ranks subjects that way), not by whichever photo has the best CSLS score. The evaluation in
docs/eval/report.md is exact (one photo per subject). A hit whose photo was erased between the search and the read
of its vector (its subject being erased) is left out of the list.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from rfr.gallery.base import Gallery, SubjectHit, Vectors
from rfr.gallery.scoring import template_hubness

logger = logging.getLogger(__name__)
MAX_CACHED = 1_000_000
"""r_g values kept (8 bytes and a face id each); the cache starts again empty past this."""


@dataclass
class HubnessSearch:
    """CSLS search of one gallery against one cohort (``cohort``: M x D float32 unit rows of the gallery's model).

    ``k``: nearest cohort faces averaged into ``r_g``; ``depth``: subjects re-ranked per search.
    ``ValueError`` when the cohort has fewer than ``k`` faces.
    """

    cohort: Vectors
    k: int
    depth: int
    _hubness: dict[str, float] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.k < 1 or len(self.cohort) < self.k:
            raise ValueError(f"hubness over k={self.k} needs a cohort of at least k faces, got {len(self.cohort)}")
        if self.depth < 1:
            raise ValueError(f"depth must be >= 1, got {self.depth}")

    def search(self, gallery: Gallery, vectors: Vectors, top_k: int, watch_lists: Sequence[str],
               thresholds: npt.NDArray[np.float64]) -> list[list[SubjectHit]]:
        """For each probe row of ``vectors`` (N x D float32): up to ``top_k`` subjects whose CSLS score is at least
        that probe's ``thresholds`` entry (shape (N,), CSLS scale), best first; each hit's ``score`` is its CSLS
        score. Raises what ``gallery.search`` / ``gallery.face_vectors`` raise (:class:`GalleryError`)."""
        if len(vectors) == 0:
            return []
        # 2 s - r_g >= t needs s >= (t + r_g) / 2 >= (t - 1) / 2, as r_g >= -1: no candidate is lost by this floor
        floor = (float(np.min(thresholds)) - 1.0) / 2.0
        found = gallery.search(vectors, self.depth, watch_lists, floor)
        hub = self.hubness_of(gallery, sorted({h.face_id for row in found for h in row}))
        gone = sum(h.face_id not in hub for row in found for h in row)
        if gone:
            logger.info("%d hit(s) left out of hubness-corrected lists: their gallery photos were erased after the "
                        "search", gone)
        out: list[list[SubjectHit]] = []
        for row, limit in zip(found, thresholds, strict=True):
            scored = [SubjectHit(h.subject_id, h.watch_list, 2.0 * h.score - hub[h.face_id], h.face_id, h.source_ref)
                      for h in row if h.face_id in hub]
            kept = [h for h in scored if h.score >= limit]
            kept.sort(key=lambda h: (-h.score, h.subject_id, h.watch_list))
            out.append(kept[:top_k])
        return out

    def hubness_of(self, gallery: Gallery, face_ids: Sequence[str]) -> dict[str, float]:
        """``r_g`` of each of ``face_ids`` (computed once per face id); a face the gallery no longer holds (erased
        since the search) is left out."""
        with self._lock:
            known = {f: self._hubness[f] for f in face_ids if f in self._hubness}
        missing = [f for f in face_ids if f not in known]
        if missing:
            held = gallery.face_vectors(missing)
            if held:
                ids = list(held)
                values = template_hubness(np.stack([held[f] for f in ids]), self.cohort, self.k)
                fresh = dict(zip(ids, (float(v) for v in values), strict=True))
                with self._lock:
                    if len(self._hubness) + len(fresh) > MAX_CACHED:
                        self._hubness.clear()
                    self._hubness.update(fresh)
                known |= fresh
        return known
