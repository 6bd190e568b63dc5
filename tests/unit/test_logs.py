"""JSON log lines carry the service and a still's or face's ids as their own fields."""

from __future__ import annotations

import json
import logging

import pytest

from rfr.core.logs import JsonFormatter, OutageLog, ids


def _line(record_extra: dict[str, object], exc: bool = False) -> dict[str, object]:
    logger = logging.getLogger("rfr.test")
    record = logger.makeRecord("rfr.test", logging.WARNING, __file__, 1, "dead-lettered %s", ("x",), None,
                               extra=record_extra)
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            import sys

            record.exc_info = sys.exc_info()
    parsed: dict[str, object] = json.loads(JsonFormatter("embed").format(record))
    return parsed


def test_ids_become_fields_of_the_json_line() -> None:
    line = _line(ids("sub_1", "sub_1:f0", topic="rfr.faces.v1", partition=2, offset=41))
    assert line["msg"] == "dead-lettered x" and line["level"] == "WARNING" and line["service"] == "embed"
    assert (line["submission_id"], line["face_id"]) == ("sub_1", "sub_1:f0")
    assert (line["topic"], line["partition"], line["offset"]) == ("rfr.faces.v1", 2, 41)


def test_absent_ids_are_left_out_and_exceptions_kept() -> None:
    assert ids(None, None) == {}
    line = _line(ids("sub_2"), exc=True)
    assert line["submission_id"] == "sub_2" and "face_id" not in line
    assert "ValueError: boom" in str(line["exc"])


def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(caplog: pytest.LogCaptureFixture) -> None:
    outage = OutageLog(logging.getLogger("rfr.test.outage"), "store down (retrying): %s", "store back")
    with caplog.at_level(logging.INFO, logger="rfr.test.outage"):
        outage.recovered()  # nothing was failing: nothing to say
        for _ in range(3):
            outage.failed(OSError("refused"))
        assert outage.active
        outage.recovered()
        outage.recovered()
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "store down (retrying): refused"), ("INFO", "store back")]
    assert not outage.active
