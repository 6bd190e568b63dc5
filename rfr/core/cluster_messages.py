"""Messages of repeat unknown offenders (schema v1 each): clusters of one unknown face seen at several stores, on
``rfr.clusters.v1``, and the reported clusters that retention emptied, on ``rfr.cluster-purges.v1``. Same rules as
:mod:`rfr.core.schemas` (frozen, ``schema_version``, JSON on the wire).

A cluster is made by the cluster service (services/cluster/) from the probes that got no candidate; it is a lead
for reviewers, never a gallery entry or a watch-list, and never an identification.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field, field_validator, model_validator

from rfr.core.geometry import Box
from rfr.core.schemas import Ident, Message, Template, check_template, template_vector, utcnow

CLUSTER_NOTICE = ("Stills that may show one person not found in any gallery, grouped by face similarity for trained "
                  "human review; not an identification.")


def _check_event_id(event_id: str, cluster_id: str, revision: int) -> None:
    """ValueError unless ``event_id`` is ``<cluster_id>:<revision>``."""
    if event_id != f"{cluster_id}:{revision}":
        raise ValueError("event_id must be '<cluster_id>:<revision>'")


class ClusterSighting(Message):
    """One unknown face of a cluster (schema v1): the probe of a candidate list with outcome ``no_candidate``."""

    schema_version: Literal[1] = 1
    face_id: str = Field(description="The probe face (CandidateList.face_id); the review store keeps its crop.")
    submission_id: str
    retailer_id: Ident
    store_id: Ident
    camera_id: Ident
    captured_at: datetime
    still_ref: str | None = Field(default=None, description="Blob-store reference of the still; None: not kept.")
    box: Box | None = Field(default=None, description="The face box in the still's pixels.")
    similarity: float = Field(description="Cosine similarity of this face's template to the cluster's fused template.")

    @property
    def store_key(self) -> str:
        """``<retailer_id>/<store_id>``: store ids are the retailer's own."""
        return f"{self.retailer_id}/{self.store_id}"


class ClusterRuleInfo(Message):
    """The rule a cluster was formed under (schema v1), so that a reader can judge its strength."""

    schema_version: Literal[1] = 1
    link_threshold: float = Field(description="Least similarity of a face to a cluster's fused template to join it "
                                  "(a cosine; hubness-corrected when hubness_k > 0; calibrated: "
                                  "benchmarks/bench_cluster.py).")
    merge_threshold: float = Field(description="Least similarity of two clusters' fused templates to merge them (on "
                                   "the same scale as link_threshold).")
    min_sightings: int = Field(ge=1, description="Sightings a cluster needs before it is reported.")
    min_stores: int = Field(ge=1, description="Distinct stores a cluster needs before it is reported.")
    linkage: Literal["centroid", "average"] = Field(
        default="centroid", description="How a face's similarity to a cluster is read: to its fused template "
        "(centroid), or the mean over its members (average). Added within v1 with the v1 meaning as default.")
    hubness_k: int = Field(
        default=0, ge=0, description="0: the thresholds are read against plain cosines. k > 0: against hubness-"
        "corrected similarities, s - (r_a + r_b) / 2 with r the mean top-k cosine to a fixed cohort "
        "(rfr/cluster/rule.py). Added within v1 with the v1 meaning (0) as default.")
    cohort_sha256: str = Field(default="", description="SHA-256 of the cohort file the correction used (empty: "
                               "none). Added within v1.")


class ClusterEvent(Message):
    """The state of one reported cluster (schema v1), on ``rfr.clusters.v1``: published when a cluster first
    reaches the rule's size and spread, again each time it grows or absorbs another, and when retention takes some of
    its sightings (``cause="retention"``); once reported, it is published on every change, also when retention has
    left it below the rule's size or spread. Each event carries the
    whole cluster: a reader keeps the highest ``revision`` of each ``cluster_id``, forgets the sightings it no longer
    names, and retires the ``merged_from`` ones. A reported cluster that retention empties gets a
    :class:`ClusterPurged` instead. ``event_id`` is ``<cluster_id>:<revision>`` (a redelivered event repeats it)."""

    schema_version: Literal[1] = 1
    event_id: str
    cluster_id: str
    revision: int = Field(ge=1, description="Increases by one with every change of the cluster's sightings.")
    model_id: str = Field(description="The embedding model of every template in the cluster (never mixed).")
    at: datetime = Field(default_factory=utcnow)
    sightings: list[ClusterSighting] = Field(min_length=1)
    template: Template = Field(description="The fused template: the normalised mean of the sightings' unit vectors.")
    merged_from: list[str] = Field(default_factory=list, description="Clusters absorbed into this one at this "
                                   "revision: readers retire them.")
    rule: ClusterRuleInfo
    cause: Literal["sightings", "retention"] = Field(
        default="sightings", description="Why this revision: ``sightings`` (the cluster grew or absorbed another) or "
        "``retention`` (the probe retention policy took the sightings it no longer names: readers delete what they "
        "keep of those). Added within v1 with the v1 meaning as default, and left out of the JSON when it is the "
        "default, so a reader of an earlier release (which refuses unknown fields) reads every event but those.")
    notice: str = CLUSTER_NOTICE

    _whole_floats = field_validator("template")(check_template)

    def to_bytes(self) -> bytes:
        """JSON, without ``cause`` when it is the default (see its description)."""
        return self.model_dump_json(exclude={"cause"} if self.cause == "sightings" else None).encode()

    @model_validator(mode="after")
    def _event_id_names_revision(self) -> ClusterEvent:
        _check_event_id(self.event_id, self.cluster_id, self.revision)
        return self

    @property
    def vector(self) -> npt.NDArray[np.float32]:
        """The fused template as float32, shape ``(dim,)``."""
        return template_vector(self.template)

    @property
    def stores(self) -> set[str]:
        """The distinct ``<retailer_id>/<store_id>`` of the sightings."""
        return {s.store_key for s in self.sightings}

    @property
    def retailers(self) -> set[str]:
        return {s.retailer_id for s in self.sightings}


class ClusterPurged(Message):
    """A reported cluster that retention emptied (schema v1), on ``rfr.cluster-purges.v1``: every sighting's probe
    reached the end of the probe retention policy (``RFR_RETENTION__NO_CANDIDATE_DAYS``), so the cluster service
    deleted the cluster, its sightings and their templates. Readers delete what they keep of it; a
    :class:`ClusterEvent` of the same ``cluster_id`` at a lower ``revision`` arriving later is stale.
    ``event_id`` is ``<cluster_id>:<revision>`` (a redelivered event repeats it)."""

    schema_version: Literal[1] = 1
    event_id: str
    cluster_id: str
    revision: int = Field(ge=2, description="The cluster's last revision plus one (it was reported at 1 or later).")
    model_id: str = Field(description="The embedding model of the cluster's templates.")
    at: datetime = Field(description="When the cluster service deleted it.")
    reason: Literal["retention"] = "retention"
    sightings_purged: int = Field(ge=1, description="Sightings deleted with the cluster by this purge.")

    @model_validator(mode="after")
    def _event_id_names_revision(self) -> ClusterPurged:
        _check_event_id(self.event_id, self.cluster_id, self.revision)
        return self
