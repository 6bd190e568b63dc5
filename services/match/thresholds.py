"""Each search's review threshold, as :class:`rfr.gallery.scoring.ThresholdRule` sets it, and what a list records.

The gallery size (enrolled photos on the searched watch-lists) is read at most every
``match.gallery_size_interval_s``; the threshold used for a search is remembered by its template so the
candidate list records exactly that threshold and size (the incident worker searches from its own thread).
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import numpy.typing as npt

from rfr.core.settings import MatchSettings
from rfr.core.stream import DependencyUnavailable
from rfr.gallery.base import Gallery, GalleryError
from rfr.gallery.scoring import ThresholdRule

logger = logging.getLogger(__name__)

GALLERY = "gallery"
MAX_REMEMBERED = 10_000  # searches whose list was never built (a batch retried) are forgotten past this


class SearchThresholds:
    """Per-probe thresholds (cosines, or CSLS scores under score_norm=hubness) and the (threshold, gallery size)
    each search used."""

    def __init__(self, gallery: Gallery, settings: MatchSettings) -> None:
        self.gallery = gallery
        self.settings = settings
        self.rule = ThresholdRule.from_settings(settings, gallery.model_id)
        self._lock = threading.Lock()
        self._size: int | None = None
        self._size_at = -np.inf
        self._used: dict[bytes, tuple[float, int | None]] = {}

    @property
    def policy(self) -> str:
        return self.rule.policy

    @property
    def score_norm(self) -> str:
        return self.rule.score_norm

    def gallery_size(self) -> int | None:
        """Photos on the searched watch-lists (cached); None when unknown under the fixed policy."""
        with self._lock:
            if time.monotonic() - self._size_at < self.settings.gallery_size_interval_s:
                return self._size
        try:
            size: int | None = self.gallery.count(self.settings.watch_lists)
        except GalleryError as exc:
            if self.rule.policy == "gallery_size":
                raise DependencyUnavailable(GALLERY, f"gallery size unknown: {exc}") from exc
            logger.warning("gallery size unknown (%s); lists record none", exc)
            size = None
        with self._lock:
            self._size, self._size_at = size, time.monotonic()
        return size

    def for_vectors(self, vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """Thresholds (N,) of N probe vectors, on the scale the list's scores are on; remembered for :meth:`used`."""
        size = self.gallery_size()
        thresholds = self.rule.per_probe(vectors, size)
        with self._lock:
            if len(self._used) > MAX_REMEMBERED:
                self._used.clear()
            for v, t in zip(vectors, thresholds, strict=True):
                self._used[_key(v)] = (float(t), size)
        return thresholds

    def used(self, template: bytes) -> tuple[float, int | None]:
        """(threshold, gallery size) of the last search of ``template`` (float32 little-endian bytes)."""
        with self._lock:
            found = self._used.pop(template, None)
        if found is not None:
            return found
        vector = np.frombuffer(template, dtype="<f4").astype(np.float32)[None, :]
        size = self.gallery_size()
        return float(self.rule.per_probe(vector, size)[0]), size


def _key(vector: npt.NDArray[np.float32]) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()
