"""Logging setup shared by every RFR process."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

# Fields a log call may pass as ``extra=`` (see :func:`ids`) that JSON lines carry as their own keys, so a log
# shipper can follow one still or face through every service: ``submission_id``, ``face_id`` and the Kafka origin.
CONTEXT_FIELDS = ("submission_id", "face_id", "topic", "partition", "offset")


def ids(submission_id: str | None = None, face_id: str | None = None, **origin: str | int | None) -> dict[str, object]:
    """The ``extra=`` of a log call about one still or face: ``logger.warning("...", extra=ids(sub, face))``."""
    fields: dict[str, object] = {"submission_id": submission_id, "face_id": face_id, **origin}
    return {k: v for k, v in fields.items() if v is not None and k in CONTEXT_FIELDS}


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers: time, level, logger, message, the service, the context fields
    of :data:`CONTEXT_FIELDS` given with the call, and the exception."""

    def __init__(self, service: str | None = None) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if self.service:
            payload["service"] = self.service
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                payload[name] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def setup_logging(level: str = "INFO", *, json_lines: bool = False, service: str | None = None) -> None:
    """Log to stderr at ``level``: JSON lines (:class:`JsonFormatter`) or text prefixed with ``[service]``."""
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter(service))
    else:
        prefix = f"[{service}] " if service else ""
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {prefix}%(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("urllib3", "httpx", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


class OutageLog:
    """Logs a failure that a periodic pass retries once per outage, not once per pass: ``failed`` warns with
    ``failing`` (a %-format taking the exception) when an outage starts, ``recovered`` logs ``again`` at INFO when
    the first pass after one succeeds. ``active``: an outage is going on."""

    def __init__(self, logger: logging.Logger, failing: str, again: str) -> None:
        self.logger = logger
        self.failing = failing
        self.again = again
        self.active = False

    def failed(self, exc: BaseException) -> None:
        if not self.active:
            self.logger.warning(self.failing, exc)
        self.active = True

    def recovered(self) -> None:
        if self.active:
            self.logger.info(self.again)
        self.active = False
