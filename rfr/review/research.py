"""Re-search of unsolved probes against newly enrolled subjects (what Idemia calls re-searching unidentified faces).

When a :class:`~rfr.core.review_messages.GalleryChange` enrols photos onto a watch-list the match service searches,
with the same embedding model, every probe still within retention (not purged, template kept) that either never got
a case (``unmatched``) or has a case still open is compared with the NEW photos only: cosine similarity of unit vectors,
the best photo per subject (:func:`rfr.gallery.base.rank_subjects`), ``threshold`` and ``top_k`` of the match
settings. A subject already a candidate on an open case of that probe is left out (that case shows them already).
Each probe with a candidate left gives a :class:`~rfr.core.schemas.CandidateList` v3 with ``trigger="re_search"``,
``re_search_of`` the change's ``event_id`` and ``event_id`` ``<face_id>:rs:<change event_id>`` (deterministic: a
redelivered change gives the same lists, which the store records once). The service publishes them on
``rfr.matches.v1`` and consumes them back like any list, so each becomes a case.

Confirmed clusters of unknown faces (:mod:`rfr.review.clusters`) are searched too: :func:`re_search_clusters`
compares each confirmed cluster's fused template (same model only) with the change's new photos, same threshold and
top_k; :func:`search_cluster` searches one on demand against the whole gallery (the review service passes its Milvus
gallery: the review store keeps no templates of enrolled photos). Each search is kept with the cluster and audited
(``cluster_re_search``); its candidates are possible candidates for trained human review, never an identification.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, Protocol

import numpy as np
from sqlalchemy import exists, or_, select

from rfr.core.geometry import Box
from rfr.core.review_messages import GalleryChange
from rfr.core.schemas import (
    Candidate,
    CandidateList,
    FaceQuality,
    Probe,
    ProbeStill,
    SubmissionMeta,
    template_vector,
)
from rfr.core.settings import MatchSettings
from rfr.gallery.base import FaceHit, SubjectHit, Vectors, normalise, rank_subjects
from rfr.review import tables as t
from rfr.review import workflow as wf
from rfr.review.store import SYSTEM_ACTOR, SYSTEM_ROLE, ReviewStore

logger = logging.getLogger(__name__)

CHUNK = 1024
"""Probes compared per matrix product."""


def re_search_event_id(face_id: str, change_event_id: str) -> str:
    return f"{face_id}:rs:{change_event_id}"


def re_search(store: ReviewStore, change: GalleryChange, match: MatchSettings, now: datetime) -> list[CandidateList]:
    """Candidate lists of unsolved probes against ``change``'s new photos (see the module docstring); [] for an
    erasure, a watch-list not in ``match.watch_lists``, or no photo with a template."""
    if change.action != "enrolled" or change.watch_list not in match.watch_lists:
        return []
    faces = [f for f in change.faces if f.template is not None]
    if not faces:
        return []
    gallery = normalise(np.stack([template_vector(f.template or b"") for f in faces]))
    out: list[CandidateList] = []
    compared = 0
    for rows, known in _unsolved(store, change.model_id):
        usable = [r for r in rows if len(r.template) == gallery.shape[1] * 4]
        if len(usable) < len(rows):
            logger.warning("re-search %s: %d probe(s) of another template dimension skipped", change.event_id,
                           len(rows) - len(usable))
        if not usable:
            continue
        compared += len(usable)
        scores = normalise(np.stack([template_vector(r.template) for r in usable])) @ gallery.T
        for row, line in zip(usable, scores, strict=True):
            found = _candidates(change, faces, line, match, known.get(row.face_id, set()))
            if found:
                out.append(_candidate_list(store, row, change, match, found, now))
    logger.info("re-search %s: %d probe(s) compared with %d new photo(s), %d new candidate list(s)",
                change.event_id, compared, len(faces), len(out))
    return out


def _unsolved(store: ReviewStore, model_id: str) -> Iterator[tuple[list[Any], dict[str, set[tuple[str, str]]]]]:
    """Unpurged probes of ``model_id`` with a template, unmatched or with an open case, in chunks of
    :data:`CHUNK` (each read in a short transaction of its own: on SQLite a transaction holds the write lock), with
    the (watch-list, subject) pairs already candidates on their open cases."""
    p, c, cs = t.probes, t.candidates, t.cases
    open_states = [s.value for s in wf.OPEN_STATES]
    query = select(p).where(
        p.c.purged_at.is_(None), p.c.template.is_not(None), p.c.crop_jpeg.is_not(None), p.c.model_id == model_id,
        or_(p.c.status == "unmatched", exists().where(cs.c.face_id == p.c.face_id, cs.c.state.in_(open_states))),
    ).order_by(p.c.face_id).limit(CHUNK)
    after: str | None = None
    while True:
        with store.engine.connect() as conn:
            rows = list(conn.execute(query if after is None else query.where(p.c.face_id > after)))
            known: dict[str, set[tuple[str, str]]] = {}
            if rows:
                shown = select(cs.c.face_id, c.c.watch_list, c.c.subject_id).join(cs, cs.c.id == c.c.case_id).where(
                    cs.c.face_id.in_([r.face_id for r in rows]), cs.c.state.in_(open_states))
                for face_id, watch_list, subject_id in conn.execute(shown):
                    known.setdefault(face_id, set()).add((watch_list, subject_id))
        if not rows:
            return
        yield rows, known
        if len(rows) < CHUNK:
            return
        after = rows[-1].face_id


def _candidates(change: GalleryChange, faces: list[Any], scores: Vectors, match: MatchSettings,
                known: set[tuple[str, str]]) -> list[Candidate]:
    hits = [FaceHit(f.face_id, f.subject_id, change.watch_list, float(s), f.source_ref)
            for f, s in zip(faces, scores, strict=True) if (change.watch_list, f.subject_id) not in known]
    ranked = rank_subjects(hits, match.top_k, match.threshold)
    return [Candidate(rank=i, subject_id=h.subject_id, score=round(h.score, 6), watch_list=h.watch_list,
                      gallery_face_id=h.face_id, source_ref=h.source_ref or None) for i, h in enumerate(ranked, 1)]


def _candidate_list(store: ReviewStore, row: Any, change: GalleryChange, match: MatchSettings,
                    found: list[Candidate], started: datetime) -> CandidateList:
    meta = SubmissionMeta(retailer_id=row.retailer_id, store_id=row.store_id, camera_id=row.camera_id,
                          captured_at=row.captured_at, case_ref=row.case_ref, channel=row.channel)
    box = json.loads(row.box)
    return CandidateList(
        event_id=re_search_event_id(row.face_id, change.event_id), face_id=row.face_id,
        submission_id=row.submission_id, meta=meta, received_at=row.received_at,
        searched_at=max(started, store.clock()), outcome="candidates", candidates=found, threshold=match.threshold,
        top_k=match.top_k, watch_lists=[change.watch_list], model_id=change.model_id,
        quality=FaceQuality.model_validate_json(row.quality),
        search_started_at=started, trigger="re_search", re_search_of=change.event_id,
        probe=Probe(still_ref=row.still_ref, box=Box(**box), crop_jpeg=row.crop_jpeg, template=row.template),
        **_first_search(store, row.face_id))


def _first_search(store: ReviewStore, face_id: str) -> dict[str, Any]:
    """What a re-search keeps of the probe's own search: the low-quality mark, the incident and its stills."""
    s = t.searches
    query = select(s.c.low_quality, s.c.incident_id, s.c.stills).where(
        s.c.face_id == face_id, s.c.trigger == "submission").limit(1)
    with store.engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None:
        return {}
    stills = [ProbeStill.model_validate(x) for x in json.loads(row.stills)] if row.stills else []
    return {"low_quality": bool(row.low_quality), "incident_id": row.incident_id, "stills": stills}


# -- confirmed clusters -----------------------------------------------------------------------------------------

class SubjectSearcher(Protocol):
    """What an on-demand search needs of a gallery (:class:`rfr.gallery.milvus.MilvusGallery`)."""

    @property
    def model_id(self) -> str: ...

    def search(self, vectors: Vectors, top_k: int, watch_lists: Sequence[str],
               threshold: float) -> list[list[SubjectHit]]: ...


def _found(hits: Sequence[SubjectHit]) -> list[dict[str, Any]]:
    return [{"rank": i, "subject_id": h.subject_id, "watch_list": h.watch_list, "score": round(float(h.score), 6),
             "gallery_face_id": h.face_id} for i, h in enumerate(hits, 1)]


def re_search_clusters(store: ReviewStore, change: GalleryChange, match: MatchSettings) -> int:
    """Search every confirmed cluster of ``change.model_id`` against ``change``'s new photos (see the module
    docstring); each search is kept and audited once per (cluster, change): a redelivered change adds none.
    Returns the searches kept; 0 for an erasure, a watch-list not searched, or no photo with a template."""
    if change.action != "enrolled" or change.watch_list not in match.watch_lists:
        return 0
    faces = [f for f in change.faces if f.template is not None]
    if not faces:
        return 0
    gallery = normalise(np.stack([template_vector(f.template or b"") for f in faces]))
    kept = 0
    for cluster_id, revision, template, _ in store.searchable_clusters(change.model_id):
        vector = template_vector(template)
        if vector.shape[0] != gallery.shape[1]:
            logger.warning("cluster %s: template of another dimension, not searched", cluster_id)
            continue
        scores = normalise(vector[None, :]) @ gallery.T
        hits = [FaceHit(f.face_id, f.subject_id, change.watch_list, float(x), f.source_ref)
                for f, x in zip(faces, scores[0], strict=True)]
        search = {"trigger": "gallery_change", "re_search_of": change.event_id, "source": "new_photos",
                  "threshold": match.threshold, "top_k": match.top_k, "watch_lists": [change.watch_list],
                  "model_id": change.model_id}
        kept += store.record_cluster_search(cluster_id, revision, search,
                                            _found(rank_subjects(hits, match.top_k, match.threshold)),
                                            SYSTEM_ACTOR, SYSTEM_ROLE, reason=change.reason)
    if kept:
        logger.info("re-search %s: %d confirmed cluster(s) searched against %d new photo(s)", change.event_id,
                    kept, len(faces))
    return kept


def search_cluster(store: ReviewStore, cluster_id: str, actor: wf.Actor, reason: str, gallery: SubjectSearcher,
                   match: MatchSettings) -> list[dict[str, Any]]:
    """Search confirmed cluster ``cluster_id``'s fused template against the whole of ``gallery`` (match settings'
    watch-lists, threshold, top_k), keep the search with the cluster and audit it (``cluster_re_search``, with
    ``actor`` and ``reason``). Returns the candidates. Raises ClusterNotFound, ClusterWrongState (not confirmed),
    NotPermitted (reviewers and supervisors only), DecisionRefused (``reason_required``, ``model_mismatch``) and
    what ``gallery.search`` raises (:class:`rfr.gallery.base.GalleryError`)."""
    wf.require_role(actor, wf.DECIDING_ROLES, "search a cluster")
    why = reason.strip()
    if not why:
        raise wf.DecisionRefused("reason_required", "give the reason for this search")
    [(_, revision, template, model_id)] = store.searchable_clusters(None, cluster_id)
    if gallery.model_id != model_id:
        raise wf.DecisionRefused("model_mismatch", f"the cluster's templates are of model {model_id}, the gallery's "
                                 f"of {gallery.model_id}: templates of different models are never compared")
    [hits] = gallery.search(normalise(template_vector(template)[None, :]), match.top_k, list(match.watch_lists),
                            match.threshold)
    found = _found(hits)
    search = {"trigger": "on_demand", "re_search_of": None, "source": "milvus", "threshold": match.threshold,
              "top_k": match.top_k, "watch_lists": list(match.watch_lists), "model_id": model_id}
    store.record_cluster_search(cluster_id, revision, search, found, actor.name, str(actor.role), reason=why)
    return found
