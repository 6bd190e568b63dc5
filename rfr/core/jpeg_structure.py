"""The structure of a whole JPEG stream, read without a decoder: for a stream that has no end-of-image marker
(EOI, ``FF D9``), whether it stops inside the entropy-coded data of its final scan with every scan present.

Only then can the stream be complete but for the EOI; whether that final scan's data is whole is a question only
an entropy decoder answers (:func:`rfr.core.imaging.probe_image` asks libjpeg, in strict mode, to decode it with the
EOI put back). Everything here follows ITU-T T.81 (JPEG): B.1.1.2 markers, B.1.1.5 byte stuffing (``FF 00``) and
restart markers (``FF D0``-``FF D7``) in entropy-coded data, B.2.2 frame header, B.2.3 scan header, G.1.1.1.1
the progressive spectral selection (Ss, Se) and successive approximation (Ah, Al).

Hand-written because no library in use reports it: Pillow's JPEG open stops at the first start-of-scan marker;
libjpeg (OpenCV, simplejpeg) decodes a stream cut inside its data with the rest filled grey, warning at most, and
one cut between the scans of a progressive JPEG without a word.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

# Start-of-frame markers (C4, C8, CC are not frames), markers without a length, and the progressive frames
# (Huffman and arithmetic, non-differential and differential).
SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
STANDALONE_MARKERS = frozenset({0x01, 0xD8, *range(0xD0, 0xD8)})
_PROGRESSIVE = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
_SOS, _EOI = 0xDA, 0xD9
_COEFFICIENTS = 64  # per 8x8 block


@dataclass
class _Coverage:
    """Which components (sequential) or which coefficients of which components down to which bit (progressive)
    the scans read so far have delivered."""

    components: tuple[int, ...] = ()
    progressive: bool = False
    seen: set[int] = field(default_factory=set)
    lowest_bit: dict[int, list[int]] = field(default_factory=dict)  # component -> per coefficient, lowest Al

    def frame(self, body: bytes, marker: int) -> None:
        count = body[5] if len(body) > 5 else 0
        self.components = tuple(body[6 + 3 * k] for k in range(count) if 6 + 3 * k < len(body))
        self.progressive = marker in _PROGRESSIVE
        self.lowest_bit = {c: [_COEFFICIENTS] * _COEFFICIENTS for c in self.components}

    def scan(self, body: bytes) -> None:
        count = body[0] if body else 0
        ids = [body[1 + 2 * k] for k in range(count) if 1 + 2 * k < len(body)]
        self.seen.update(ids)
        tail = 1 + 2 * count
        if not self.progressive or tail + 3 > len(body):
            return
        start, end, al = body[tail], min(body[tail + 1], _COEFFICIENTS - 1), body[tail + 2] & 0x0F
        for c in ids:
            bits = self.lowest_bit.get(c)
            if bits is None:
                continue
            for k in range(start, end + 1):
                bits[k] = min(bits[k], al)

    def missing(self) -> str | None:
        """What the scans so far lack, or None when a decoder has every scan it needs."""
        if not self.components:
            return "no frame header"
        absent = [c for c in self.components if c not in self.seen]
        if absent:
            return f"component(s) {absent} have no scan"
        if self.progressive:
            unfinished = [c for c, bits in self.lowest_bit.items() if any(b != 0 for b in bits)]
            if unfinished:
                return f"the progression of component(s) {unfinished} is unfinished"
        return None


def _entropy_end(data: bytes, pos: int) -> int:
    """Where the entropy-coded data starting at ``pos`` ends: the offset of the next marker, or ``len(data)``
    when the stream stops inside it (a lone ``FF`` as the last byte counts as cut inside a marker: -1)."""
    while True:
        k = data.find(b"\xff", pos)
        if k < 0:
            return len(data)
        if k + 1 >= len(data):
            return -1
        nxt = data[k + 1]
        if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:  # stuffed FF, restart marker: still inside the scan
            pos = k + 2
        elif nxt == 0xFF:  # fill byte before a marker
            pos = k + 1
        else:
            return k


def missing_only_eoi(data: bytes) -> str | None:
    """None when ``data`` (a JPEG without EOI) stops inside its final scan's entropy-coded data and every scan a
    decoder needs is present; otherwise why it is cut off (a human-readable phrase)."""
    cover = _Coverage()
    i = 2
    while i < len(data):
        if data[i] != 0xFF:
            return f"no marker at byte {i}"
        while i < len(data) and data[i] == 0xFF:
            i += 1
        if i >= len(data):
            return f"cut inside a marker at byte {i - 1}"
        marker = data[i]
        i += 1
        if marker in STANDALONE_MARKERS:
            continue
        if marker == _EOI:
            return None  # an EOI after all (the caller looked for one only after the first scan)
        length = struct.unpack_from(">H", data, i)[0] if i + 2 <= len(data) else 0
        if length < 2 or i + length > len(data):
            return f"cut inside the segment of marker FF {marker:02X} at byte {i - 2}"
        body = data[i + 2: i + length]
        i += length
        if marker in SOF_MARKERS:
            cover.frame(body, marker)
        elif marker == _SOS:
            cover.scan(body)
            end = _entropy_end(data, i)
            if end < 0:
                return "cut inside a marker after the scan data"
            if end == len(data):
                missing = cover.missing()
                return None if missing is None else f"stops in scan data while {missing}"
            i = end
    return "stops between segments, outside any scan"
