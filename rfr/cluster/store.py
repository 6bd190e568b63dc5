"""The cluster store: the durable truth of repeat unknown offenders (sightings and clusters), on SQL.

Three tables (schema: the Alembic history in ``rfr/cluster/migrations``, version table ``alembic_version_cluster``):

* ``cluster_sightings``, one row per unknown face, keyed by ``face_id`` (the probe of a ``no_candidate`` candidate
  list): where and when it was seen, its still and box, its embedding model and unit template (float32 LE bytes),
  the cluster it is in, and ``searched_at`` (retention counts from it);
* ``clusters``: the running sum of the members' unit vectors (float32 LE bytes) and their count (the fused template
  is the normalised sum, :class:`rfr.cluster.rule.Centroid`), a ``revision`` that increases with every change of
  its sightings, whether it was ever ``reported``, the clusters it absorbed at its latest revision, what made that
  revision (``cause``: ``sightings`` or ``retention``), and times;
* ``cluster_outbox``: events a retention pass made, waiting for the broker (:mod:`rfr.cluster.outbox`).

The caller (:class:`rfr.cluster.clusterer.Clusterer`) does every write of one face inside one
:meth:`ClusterStore.transaction`, so a crash leaves a face either wholly recorded or not at all, and a redelivered
face finds its row (idempotent on ``face_id``). SQLite by default (``rfr.core.db``: ``BEGIN IMMEDIATE`` serialises
writers), PostgreSQL for several workers (cluster rows are read ``FOR UPDATE``, in id order, so two workers never
update one cluster at once and never deadlock). Times are POSIX seconds (UTC) in the tables and aware datetimes
here.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    delete,
    func,
    insert,
    select,
    update,
)

from rfr.cluster.rule import Centroid, Vector
from rfr.core import db
from rfr.core.geometry import Box
from rfr.core.schemas import template_bytes, template_vector

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "alembic_version_cluster"

metadata = MetaData()
clusters = Table(
    "clusters", metadata,
    Column("cluster_id", Text, primary_key=True), Column("model_id", Text, nullable=False),
    Column("total", LargeBinary, nullable=False), Column("members", Integer, nullable=False),
    Column("revision", Integer, nullable=False), Column("reported", Integer, nullable=False),
    Column("merged_from", Text, nullable=False), Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("cause", Text, nullable=False, server_default="sightings"))
sightings = Table(
    "cluster_sightings", metadata,
    Column("face_id", Text, primary_key=True),
    Column("cluster_id", Text, ForeignKey("clusters.cluster_id"), nullable=False),
    Column("submission_id", Text, nullable=False), Column("retailer_id", Text, nullable=False),
    Column("store_id", Text, nullable=False), Column("camera_id", Text, nullable=False),
    Column("captured_at", Float, nullable=False), Column("searched_at", Float, nullable=False),
    Column("still_ref", Text), Column("box_x", Float), Column("box_y", Float), Column("box_width", Float),
    Column("box_height", Float), Column("model_id", Text, nullable=False),
    Column("template", LargeBinary, nullable=False),
    Index("cluster_sightings_cluster", "cluster_id"), Index("cluster_sightings_searched", "searched_at"),
    Index("cluster_sightings_model", "model_id", "face_id"))

outbox = Table(
    "cluster_outbox", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True), Column("topic", Text, nullable=False),
    Column("key", Text, nullable=False), Column("event_id", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False), Column("created_at", Float, nullable=False),
    sqlite_autoincrement=True)  # a sequence number is never used twice, even after the newest rows were deleted


def _ts(at: datetime) -> float:
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


@dataclass(frozen=True)
class Sighting:
    """One recorded unknown face. ``template``: its unit vector as float32 LE bytes; ``cluster_id``: its cluster."""

    face_id: str
    submission_id: str
    retailer_id: str
    store_id: str
    camera_id: str
    captured_at: datetime
    searched_at: datetime
    still_ref: str | None
    box: Box | None
    model_id: str
    template: bytes
    cluster_id: str = ""

    @property
    def vector(self) -> Vector:
        """The unit template, float32, shape ``(dim,)``."""
        return template_vector(self.template)

    @property
    def store_key(self) -> str:
        return f"{self.retailer_id}/{self.store_id}"


@dataclass(frozen=True)
class Cluster:
    """One cluster's row: ``centroid`` (sum and count of its members' unit vectors), ``revision`` (1 when made),
    ``reported`` (an event was published for it), ``merged_from`` (absorbed at this revision), ``cause`` (what made
    this revision: ``sightings`` recorded or absorbed, or ``retention``; :attr:`ClusterEvent.cause`)."""

    cluster_id: str
    model_id: str
    centroid: Centroid
    revision: int
    reported: bool
    merged_from: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    cause: Literal["sightings", "retention"] = "sightings"


class ClusterStore:
    """The cluster tables on one database (``engine``), migrated to the newest revision on construction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        db.migrate(engine, MIGRATIONS, VERSION_TABLE)

    @classmethod
    def open(cls, url: str) -> ClusterStore:
        """The store at ``url`` (``sqlite:///<path>`` or ``postgresql+psycopg://...``; ValueError for others)."""
        return cls(db.make_engine(url))

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One transaction: committed when the block ends, rolled back when it raises."""
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A connection for reads only (no write lock taken on SQLite)."""
        with self.engine.connect() as conn:
            yield conn

    # -- sightings ----------------------------------------------------------------------------------------------
    def sighting(self, conn: Connection, face_id: str) -> Sighting | None:
        row = conn.execute(select(sightings).where(sightings.c.face_id == face_id)).first()
        return None if row is None else _sighting(row)

    def clusters_of(self, conn: Connection, face_ids: Collection[str], model_id: str) -> dict[str, str]:
        """{face id: cluster id} of those of ``face_ids`` recorded under ``model_id`` (others are left out)."""
        if not face_ids:
            return {}
        rows = conn.execute(select(sightings.c.face_id, sightings.c.cluster_id).where(
            sightings.c.face_id.in_(list(face_ids)), sightings.c.model_id == model_id))
        return {str(f): str(c) for f, c in rows}

    def owners(self, conn: Connection, face_ids: Collection[str]) -> dict[str, str]:
        """{face id: cluster id} of those of ``face_ids`` still recorded, as the transaction sees them now (any
        model). Not locked: to keep them, lock their clusters (:meth:`clusters`) and read again, since a sighting
        only ever moves under the locks of the clusters it leaves and joins."""
        if not face_ids:
            return {}
        rows = conn.execute(select(sightings.c.face_id, sightings.c.cluster_id).where(
            sightings.c.face_id.in_(sorted(face_ids))))
        return {str(f): str(c) for f, c in rows}

    def add_sighting(self, conn: Connection, s: Sighting) -> None:
        box = (s.box.x, s.box.y, s.box.width, s.box.height) if s.box is not None else (None,) * 4
        conn.execute(insert(sightings).values(
            face_id=s.face_id, cluster_id=s.cluster_id, submission_id=s.submission_id, retailer_id=s.retailer_id,
            store_id=s.store_id, camera_id=s.camera_id, captured_at=_ts(s.captured_at),
            searched_at=_ts(s.searched_at), still_ref=s.still_ref, box_x=box[0], box_y=box[1], box_width=box[2],
            box_height=box[3], model_id=s.model_id, template=s.template))

    def members(self, conn: Connection, cluster_id: str) -> list[Sighting]:
        """The sightings of one cluster, oldest capture first (ties by face id)."""
        rows = conn.execute(select(sightings).where(sightings.c.cluster_id == cluster_id)
                            .order_by(sightings.c.captured_at, sightings.c.face_id))
        return [_sighting(r) for r in rows]

    def move_members(self, conn: Connection, from_id: str, to_id: str) -> None:
        conn.execute(update(sightings).where(sightings.c.cluster_id == from_id).values(cluster_id=to_id))

    def expired(self, conn: Connection, before: datetime, limit: int) -> list[Sighting]:
        """Sightings searched before ``before``, oldest first, at most ``limit``."""
        rows = conn.execute(select(sightings).where(sightings.c.searched_at < _ts(before))
                            .order_by(sightings.c.searched_at, sightings.c.face_id).limit(limit))
        return [_sighting(r) for r in rows]

    def delete_sightings(self, conn: Connection, face_ids: Collection[str]) -> None:
        if face_ids:
            conn.execute(delete(sightings).where(sightings.c.face_id.in_(list(face_ids))))

    def page(self, conn: Connection, after: str, limit: int) -> list[Sighting]:
        """Up to ``limit`` sightings with a face id after ``after``, in face id order (to walk the whole table)."""
        rows = conn.execute(select(sightings).where(sightings.c.face_id > after)
                            .order_by(sightings.c.face_id).limit(limit))
        return [_sighting(r) for r in rows]

    def model_ids(self, conn: Connection) -> list[str]:
        """The embedding models with recorded sightings."""
        return sorted(str(m) for m in conn.execute(select(sightings.c.model_id).distinct()).scalars())

    # -- clusters -----------------------------------------------------------------------------------------------
    def clusters(self, conn: Connection, ids: Collection[str]) -> dict[str, Cluster]:
        """The clusters of ``ids`` that exist, read for update (PostgreSQL: row locks, taken in id order)."""
        if not ids:
            return {}
        rows = conn.execute(select(clusters).where(clusters.c.cluster_id.in_(sorted(ids)))
                            .order_by(clusters.c.cluster_id).with_for_update())
        return {str(r.cluster_id): _cluster(r) for r in rows}

    def save_cluster(self, conn: Connection, c: Cluster, *, new: bool) -> None:
        values = {"model_id": c.model_id, "total": template_bytes(c.centroid.total), "members": c.centroid.count,
                  "revision": c.revision, "reported": int(c.reported), "merged_from": json.dumps(list(c.merged_from)),
                  "created_at": _ts(c.created_at), "updated_at": _ts(c.updated_at), "cause": c.cause}
        if new:
            conn.execute(insert(clusters).values(cluster_id=c.cluster_id, **values))
        else:
            conn.execute(update(clusters).where(clusters.c.cluster_id == c.cluster_id).values(**values))

    def delete_cluster(self, conn: Connection, cluster_id: str) -> None:
        conn.execute(delete(clusters).where(clusters.c.cluster_id == cluster_id))

    def store_count(self, conn: Connection, cluster_id: str) -> int:
        """Distinct ``(retailer, store)`` among one cluster's sightings."""
        pairs = select(sightings.c.retailer_id, sightings.c.store_id).where(
            sightings.c.cluster_id == cluster_id).distinct().subquery()
        return int(conn.execute(select(func.count()).select_from(pairs)).scalar_one())

    def counts(self) -> tuple[int, int]:
        """(clusters, sightings) held now."""
        with self.reading() as conn:
            n_clusters = conn.execute(select(func.count()).select_from(clusters)).scalar_one()
            n_sightings = conn.execute(select(func.count()).select_from(sightings)).scalar_one()
        return int(n_clusters), int(n_sightings)

    def cluster_ids(self, conn: Connection) -> list[str]:
        return sorted(str(c) for c in conn.execute(select(clusters.c.cluster_id)).scalars())


def centroid_of(members: Sequence[Sighting]) -> Centroid:
    """The exact sum and count of ``members``' unit vectors (float64 sum, stored as float32)."""
    total = np.sum([m.vector.astype(np.float64) for m in members], axis=0).astype(np.float32)
    return Centroid(total, len(members))


def _sighting(row: object) -> Sighting:
    r = row._mapping  # type: ignore[attr-defined]
    box = None if r["box_x"] is None else Box(r["box_x"], r["box_y"], r["box_width"], r["box_height"])
    return Sighting(face_id=r["face_id"], submission_id=r["submission_id"], retailer_id=r["retailer_id"],
                    store_id=r["store_id"], camera_id=r["camera_id"], captured_at=_dt(r["captured_at"]),
                    searched_at=_dt(r["searched_at"]), still_ref=r["still_ref"], box=box, model_id=r["model_id"],
                    template=bytes(r["template"]), cluster_id=r["cluster_id"])


def _cluster(row: object) -> Cluster:
    r = row._mapping  # type: ignore[attr-defined]
    return Cluster(cluster_id=r["cluster_id"], model_id=r["model_id"],
                   centroid=Centroid(template_vector(bytes(r["total"])).copy(), int(r["members"])),
                   revision=int(r["revision"]), reported=bool(r["reported"]),
                   merged_from=tuple(json.loads(r["merged_from"])), created_at=_dt(r["created_at"]),
                   updated_at=_dt(r["updated_at"]), cause="retention" if r["cause"] == "retention" else "sightings")
