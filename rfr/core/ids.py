"""The one identifier rule: retailer, store, camera, case, submission, face and subject ids.

1 to 128 characters from ``A-Z a-z 0-9 _ . : @ -``: safe in Kafka headers and keys, file names, Milvus filter
expressions and URLs, and wide enough for e-mail-like and namespaced ids (``met:ab12``). Nothing is stripped:
an id with a space, even a trailing one, is invalid.
"""

from __future__ import annotations

import re

IDENT_CHARS = r"A-Za-z0-9_.:@\-"
IDENT_MAX = 128
IDENT_PATTERN = rf"^[{IDENT_CHARS}]{{1,{IDENT_MAX}}}$"  # pydantic StringConstraints(pattern=...)
_IDENT = re.compile(rf"[{IDENT_CHARS}]{{1,{IDENT_MAX}}}")
_UNSAFE = re.compile(rf"[^{IDENT_CHARS}]")


def is_ident(text: str) -> bool:
    """True when ``text`` is a valid id as a whole (``fullmatch``: a trailing newline is not allowed)."""
    return _IDENT.fullmatch(text) is not None


def to_ident(text: str) -> str:
    """A valid id made from any name (a folder name, say): unsafe characters become ``_``, cut to 128."""
    return _UNSAFE.sub("_", text)[:IDENT_MAX] or "_"
