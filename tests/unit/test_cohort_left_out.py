"""What `rfr cohort` and `rfr calibrate --cohort-from` say they left out (rfr/tools/cohort_cli.py)."""

from __future__ import annotations

from rfr.tools.cohort_cli import left_out


def test_left_out_names_every_reason_with_its_count_and_says_none_when_nothing_was() -> None:
    assert left_out({"unreadable": 1, "no_face": 2}) == "2 no_face, 1 unreadable"
    assert left_out({"no_face": 0}) == "none"
    assert left_out({}) == "none"
