"""Per-retailer API keys for the HTTP channel. Only sha256 hashes of keys are ever stored.

A key is ``rfr_`` + 43 random URL-safe characters (256 bits). Each configured entry is
``<retailer_id>:<sha256 hex of the key>``; a retailer may hold several keys (rotation), a key belongs to
exactly one retailer. Entries come from ``settings.ingest.api_keys`` (comma- or newline-separated, env
``RFR_INGEST__API_KEYS``) and from ``settings.ingest.api_keys_file`` (default ``<stack state dir>/api-keys``;
one entry per line, ``#`` comments), which is re-read when it changes, so a key added with
``rfr api-keys create RETAILER`` works without a restart.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import threading
from pathlib import Path

from rfr.core.ids import is_ident
from rfr.core.settings import Settings

logger = logging.getLogger(__name__)

KEY_PREFIX = "rfr_"
API_KEY_HEADER = "X-API-Key"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class ApiKeyConfigError(ValueError):
    """An API key entry is malformed, or one key hash is given to two retailers."""


def keys_file(settings: Settings) -> Path:
    return settings.ingest.api_keys_file or settings.stack.state_dir / "api-keys"


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def parse_entries(text: str, origin: str) -> dict[str, str]:
    """``retailer:hash`` entries (commas, newlines, ``#`` comments) -> {hash: retailer}."""
    out: dict[str, str] = {}
    for n, raw in enumerate(re.split(r"[,\n]", text), start=1):
        entry = raw.split("#", 1)[0].strip()
        if not entry:
            continue
        retailer, sep, digest = entry.rpartition(":")
        digest = digest.strip().lower()
        retailer = retailer.strip()
        if not sep or not is_ident(retailer) or not _HEX64.match(digest):
            raise ApiKeyConfigError(f"{origin} entry {n}: expected '<retailer_id>:<sha256 hex>'")
        if out.get(digest, retailer) != retailer:
            raise ApiKeyConfigError(f"{origin} entry {n}: this key hash already belongs to another retailer")
        out[digest] = retailer
    return out


def _merge(a: dict[str, str], b: dict[str, str]) -> dict[str, str]:
    for digest, retailer in b.items():
        if a.get(digest, retailer) != retailer:
            raise ApiKeyConfigError("one key hash is configured for two retailers")
    return a | b


class ApiKeyRegistry:
    """Maps a presented key to its retailer; re-reads the keys file when its modification time changes."""

    def __init__(self, inline: str = "", file: Path | None = None) -> None:
        self._inline = parse_entries(inline, "api_keys")
        self._file = file
        self._stamp: tuple[int, int] | None = None
        self._keys = dict(self._inline)
        self._lock = threading.Lock()
        self.refresh()

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiKeyRegistry:
        return cls(settings.ingest.api_keys, keys_file(settings))

    def refresh(self) -> None:
        if self._file is None:
            return
        try:
            st = self._file.stat()
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if stamp == self._stamp:
                return
            from_file = parse_entries(self._file.read_text(), str(self._file)) if stamp is not None else {}
            self._keys = _merge(dict(self._inline), from_file)
            self._stamp = stamp
        logger.info("API keys loaded: %d key(s) for %d retailer(s)", len(self._keys), len(set(self._keys.values())))

    def retailer_for(self, secret: str | None) -> str | None:
        """The retailer a key belongs to, or None for a missing or unknown key."""
        if not secret:
            return None
        try:
            self.refresh()
        except (OSError, ApiKeyConfigError):
            logger.exception("keys file %s unreadable; keeping the keys loaded before", self._file)
        return self._keys.get(hash_key(secret))

    def __len__(self) -> int:
        return len(self._keys)


def make_entry(retailer_id: str) -> tuple[str, str]:
    """A new key for ``retailer_id``: (the secret, the ``retailer:hash`` entry to configure)."""
    if not is_ident(retailer_id):
        raise ApiKeyConfigError(f"invalid retailer id {retailer_id!r} (letters, digits and _.:@- only)")
    secret = new_key()
    return secret, f"{retailer_id}:{hash_key(secret)}"


def add_key(file: Path, retailer_id: str) -> str:
    """Create a key for ``retailer_id``, append its entry to ``file`` (created with mode 0600); return the secret."""
    secret, entry = make_entry(retailer_id)
    file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as fh:
        fh.write(entry + "\n")
    return secret
