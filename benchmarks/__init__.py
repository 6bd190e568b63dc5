"""Benchmarks: each prints JSON; `python -m benchmarks.run` runs them all."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def emit(report: Mapping[str, Any], out: Path | None) -> int:
    """Print ``report`` as indented JSON, and write the same text to ``out`` when one is given; returns 0 (the exit
    code of a benchmark that ran)."""
    text = json.dumps(report, indent=2)
    if out is not None:
        out.write_text(text + "\n")
    print(text)
    return 0
