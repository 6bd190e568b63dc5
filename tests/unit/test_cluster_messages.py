"""ClusterEvent and ClusterPurged v1 on the wire: the event id names the revision, the template round-trips, stores are
per retailer, a cause added within v1 reads as before when absent."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest
from pydantic import ValidationError

from rfr.core.cluster_messages import CLUSTER_NOTICE, ClusterEvent, ClusterPurged, ClusterRuleInfo, ClusterSighting
from rfr.core.schemas import decode, template_bytes

AT = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def _sighting(face: str, retailer: str, store: str) -> ClusterSighting:
    return ClusterSighting(face_id=face, submission_id=f"sub_{face}", retailer_id=retailer, store_id=store,
                           camera_id="cam-1", captured_at=AT, similarity=0.8)


def _event(**changes: object) -> ClusterEvent:
    fields: dict[str, object] = {
        "event_id": "cl_1:2", "cluster_id": "cl_1", "revision": 2, "model_id": "facenet-casia-webface", "at": AT,
        "sightings": [_sighting("a", "r1", "s1"), _sighting("b", "r2", "s1"), _sighting("c", "r1", "s1")],
        "template": template_bytes(np.full(512, 1 / np.sqrt(512), np.float32)),
        "rule": ClusterRuleInfo(link_threshold=0.68, merge_threshold=0.73, min_sightings=3, min_stores=2)}
    return ClusterEvent(**(fields | changes))  # type: ignore[arg-type]


def test_an_event_round_trips_and_counts_stores_per_retailer() -> None:
    event = decode(ClusterEvent, _event().to_bytes())
    assert event == _event()
    assert event.stores == {"r1/s1", "r2/s1"}  # store ids are the retailer's own: s1 of r1 is not s1 of r2
    assert event.retailers == {"r1", "r2"}
    assert event.vector.shape == (512,) and event.vector.dtype == np.float32
    assert abs(float(np.linalg.norm(event.vector)) - 1.0) < 1e-5
    assert event.notice == CLUSTER_NOTICE and "not an identification" in event.notice


@pytest.mark.parametrize("event_id", ["cl_1:1", "cl_2:2", "cl_1"])
def test_the_event_id_must_name_the_cluster_and_its_revision(event_id: str) -> None:
    with pytest.raises(ValidationError, match="event_id"):
        _event(event_id=event_id)


def test_an_event_needs_a_sighting_and_whole_floats() -> None:
    with pytest.raises(ValidationError):
        _event(sightings=[])
    with pytest.raises(ValidationError, match="float32"):
        _event(template=b"\x00" * 2050)


def test_an_event_of_a_release_without_cause_reads_as_made_by_sightings() -> None:
    wire = _event().model_dump(mode="json")
    del wire["cause"]
    assert decode(ClusterEvent, json.dumps(wire).encode()).cause == "sightings"
    assert decode(ClusterEvent, _event(cause="retention").to_bytes()).cause == "retention"
    assert b'"cause"' not in _event().to_bytes()  # so a reader of an earlier release still reads it
    assert b'"cause":"retention"' in _event(cause="retention").to_bytes()
    with pytest.raises(ValidationError):
        _event(cause="reviewer")


def test_a_purge_names_the_revision_after_the_last_and_what_it_deleted() -> None:
    purged = ClusterPurged(event_id="cl_1:4", cluster_id="cl_1", revision=4, model_id="m", at=AT, sightings_purged=3)
    assert decode(ClusterPurged, purged.to_bytes()) == purged and purged.reason == "retention"
    for bad in ({"event_id": "cl_1:3"}, {"revision": 1, "event_id": "cl_1:1"}, {"sightings_purged": 0},
                {"reason": "reviewer"}):
        with pytest.raises(ValidationError):
            ClusterPurged(**(purged.model_dump() | bad))
