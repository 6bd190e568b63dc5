"""Test data of clusters of unknown faces: ClusterEvents over probes recorded as ``no_candidate`` lists in a
review store (:mod:`support.review_data`), with synthetic unit-vector templates."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import numpy as np

from rfr.core.cluster_messages import ClusterEvent, ClusterRuleInfo, ClusterSighting
from rfr.core.schemas import template_bytes
from support.review_data import MODEL, T0, Env, candidate_list, unit

RULE = ClusterRuleInfo(link_threshold=0.7, merge_threshold=0.75, min_sightings=3, min_stores=2)
OFFENDER = unit((3, 1.0))
"""The repeat unknown offender's face (not enrolled at first)."""
STRANGER = unit((9, 1.0))


def sighting(face_id: str, store: str, *, retailer: str = "shop-1", minutes: float = 0.0,
             similarity: float = 0.93) -> ClusterSighting:
    return ClusterSighting(face_id=face_id, submission_id=face_id.split(":", maxsplit=1)[0], retailer_id=retailer,
                           store_id=store, camera_id="cam-1", captured_at=T0 + timedelta(minutes=minutes),
                           similarity=similarity)


def cluster_event(cluster_id: str, revision: int, sightings: Sequence[ClusterSighting], *,
                  template: np.ndarray = OFFENDER, merged_from: Sequence[str] = (), model_id: str = MODEL,
                  minutes: float = 0.0) -> ClusterEvent:
    return ClusterEvent(event_id=f"{cluster_id}:{revision}", cluster_id=cluster_id, revision=revision,
                        model_id=model_id, at=T0 + timedelta(minutes=minutes), sightings=list(sightings),
                        template=template_bytes(template), merged_from=list(merged_from), rule=RULE)


def unknown_probe(env: Env, face_id: str, template: np.ndarray = OFFENDER, retailer: str = "shop-1",
                  at: datetime = T0) -> None:
    """Record ``face_id`` as a probe that got no candidate (what the match service sends the review service)."""
    assert env.store.record_search(candidate_list(face_id, [], template=template, retailer_id=retailer,
                                                  case_ref=None, at=at)) is None


def offender_cluster(env: Env, cluster_id: str = "cl-1", faces: int = 3, revision: int = 1) -> ClusterEvent:
    """``faces`` probes of the offender at stores ``store-0``, ``store-1``... (their probes recorded first) and the
    cluster event of them."""
    names = [f"sub_{cluster_id}_{i}:f0" for i in range(faces)]
    for i, name in enumerate(names):
        unknown_probe(env, name, unit((3, 1.0), (5 + i % 3, 0.1)))
    return cluster_event(cluster_id, revision, [sighting(n, f"store-{i}", minutes=i) for i, n in enumerate(names)])
