"""Reading back the PDFs the services write (fpdf2, core fonts), for assertions on their text."""

from __future__ import annotations

import re
import zlib


def pdf_text(pdf: bytes) -> str:
    """The text drawn in ``pdf`` (fpdf2 core-font ``(...) Tj`` strings of its Flate streams), joined by spaces."""
    found = []
    for stream in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", pdf, re.S):
        data = stream.group(1)
        try:
            data = zlib.decompress(data)
        except zlib.error:
            continue
        for text in re.finditer(rb"\(((?:[^()\\]|\\.)*)\)\s*Tj", data, re.S):
            found.append(re.sub(rb"\\(.)", rb"\1", text.group(1)).decode("latin-1"))
    return re.sub(r"\s+", " ", " ".join(found))
