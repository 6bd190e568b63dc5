"""The one face box: pixels of the image it was found in, top-left corner plus size.

A frozen dataclass, so the detector (thousands of raw candidates per frame, see :func:`Box.iou`), alignment,
evaluation and the wire (``FaceEvent.box``, a JSON object ``{"x", "y", "width", "height"}``) share one type. It
also reads like the ``(x, y, w, h)`` tuple OpenCV and MediaPipe use: ``x, y, w, h = box`` and ``box[2]`` work.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Box:
    x: float
    y: float
    width: float
    height: float

    @classmethod
    def of(cls, box: Box | Sequence[float]) -> Box:
        """``box`` itself, or a Box from an ``(x, y, w, h)`` sequence."""
        return box if isinstance(box, Box) else cls(*(float(v) for v in box))

    @property
    def area(self) -> float:
        return self.width * self.height

    @property
    def centre(self) -> tuple[float, float]:
        return self.x + self.width / 2, self.y + self.height / 2

    def intersection(self, other: Box) -> float:
        """Area (pixels squared) the two boxes share; 0 when apart."""
        x0, y0 = max(self.x, other.x), max(self.y, other.y)
        x1, y1 = min(self.x + self.width, other.x + other.width), min(self.y + self.height, other.y + other.height)
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)

    def iou(self, other: Box) -> float:
        """Intersection over union with ``other``, in [0, 1] (0 for two empty boxes)."""
        inter = self.intersection(other)
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def __iter__(self) -> Iterator[float]:
        return iter((self.x, self.y, self.width, self.height))

    def __getitem__(self, index: int) -> float:
        return (self.x, self.y, self.width, self.height)[index]
