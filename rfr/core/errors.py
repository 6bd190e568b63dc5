"""The one shape of a refusal: a machine-readable ``reason`` and a human ``detail``."""

from __future__ import annotations


class ReasonedError(Exception):
    """Base of the errors that carry a short machine reason (for metrics, dead letters, HTTP) and a detail."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
