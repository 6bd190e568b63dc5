"""The cluster store's tables (rfr/cluster/store.py) on SQLite: schema = migrations, rows round-trip."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from support.unknowns import MODEL, person

from rfr.cluster.rule import Centroid
from rfr.cluster.store import VERSION_TABLE, Cluster, ClusterStore, Sighting, centroid_of, metadata
from rfr.core.db import sqlite_url
from rfr.core.geometry import Box
from rfr.core.schemas import template_bytes

AT = datetime(2026, 11, 1, 10, 30, 15, 250000, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ClusterStore]:
    s = ClusterStore.open(sqlite_url(tmp_path / "c" / "cluster.db"))
    yield s
    s.close()


def _sighting(face: str, cluster: str, retailer: str = "r1", store: str = "s1", box: Box | None = None) -> Sighting:
    return Sighting(face_id=face, submission_id=f"sub_{face}", retailer_id=retailer, store_id=store, camera_id="c",
                    captured_at=AT, searched_at=AT + timedelta(minutes=1), still_ref="sha256:ab" if box else None,
                    box=box, model_id=MODEL, template=template_bytes(person(len(face))), cluster_id=cluster)


def _cluster(cid: str, members: list[Sighting]) -> Cluster:
    return Cluster(cid, MODEL, centroid_of(members), 1, False, ("x",), AT, AT)


def test_the_migrations_make_exactly_the_declared_tables(store: ClusterStore) -> None:
    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        diff = compare_metadata(context, metadata)
        tables = set(inspect(conn).get_table_names())
    assert diff == []
    assert {"clusters", "cluster_sightings", VERSION_TABLE} <= tables


def test_a_second_open_finds_the_schema_done(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "cluster.db")
    ClusterStore.open(url).close()
    ClusterStore.open(url).close()


def test_rows_round_trip(store: ClusterStore) -> None:
    with_box = _sighting("face-a", "c1", box=Box(1.5, 2.0, 30.0, 40.25))
    plain = _sighting("face-bb", "c1")
    with store.transaction() as conn:
        store.save_cluster(conn, _cluster("c1", [with_box, plain]), new=True)
        store.add_sighting(conn, with_box)
        store.add_sighting(conn, plain)
    with store.reading() as conn:
        assert store.sighting(conn, "face-a") == with_box
        assert store.sighting(conn, "face-bb") == plain and store.sighting(conn, "nobody") is None
        (cluster,) = store.clusters(conn, ["c1", "c-missing"]).values()
        assert store.clusters_of(conn, ["face-a", "face-bb", "ghost"], MODEL) == {"face-a": "c1", "face-bb": "c1"}
        assert store.clusters_of(conn, ["face-a"], "another-model") == {}
    assert cluster.centroid.count == 2 and cluster.merged_from == ("x",) and cluster.created_at == AT
    assert np.allclose(cluster.centroid.total, with_box.vector + plain.vector)


def test_stores_are_counted_per_retailer(store: ClusterStore) -> None:
    rows = [_sighting("f1", "c1", "r1", "s1"), _sighting("f2", "c1", "r1", "s1"), _sighting("f3", "c1", "r2", "s1")]
    with store.transaction() as conn:
        store.save_cluster(conn, _cluster("c1", rows), new=True)
        for row in rows:
            store.add_sighting(conn, row)
        assert store.store_count(conn, "c1") == 2  # s1 of r1 and s1 of r2 are two shops


def test_a_failed_transaction_leaves_nothing(store: ClusterStore) -> None:
    row = _sighting("f1", "c1")
    with pytest.raises(RuntimeError), store.transaction() as conn:
        store.save_cluster(conn, _cluster("c1", [row]), new=True)
        store.add_sighting(conn, row)
        raise RuntimeError("crash before commit")
    assert store.counts() == (0, 0)


def test_moving_members_and_paging(store: ClusterStore) -> None:
    a, b = [_sighting("f1", "c1")], [_sighting("f2", "c2"), _sighting("f3", "c2")]
    with store.transaction() as conn:
        store.save_cluster(conn, _cluster("c1", a), new=True)
        store.save_cluster(conn, _cluster("c2", b), new=True)
        for row in a + b:
            store.add_sighting(conn, row)
        store.move_members(conn, "c2", "c1")
        store.delete_cluster(conn, "c2")
    with store.reading() as conn:
        assert [m.face_id for m in store.members(conn, "c1")] == ["f1", "f2", "f3"]
        assert [s.face_id for s in store.page(conn, "f1", 5)] == ["f2", "f3"]
        assert store.model_ids(conn) == [MODEL] and store.cluster_ids(conn) == ["c1"]
    assert store.counts() == (1, 3)


def test_centroid_of_is_the_sum_and_count() -> None:
    rows = [_sighting("f1", "c"), _sighting("f22", "c")]
    c = centroid_of(rows)
    assert isinstance(c, Centroid) and c.count == 2 and c.total.dtype == np.float32
    assert np.allclose(c.total, rows[0].vector + rows[1].vector)


def test_owners_are_the_clusters_faces_are_in_now(store: ClusterStore) -> None:
    a, b = _sighting("a", "c1"), _sighting("bb", "c2")
    with store.transaction() as conn:
        for s in (a, b):
            store.save_cluster(conn, _cluster(s.cluster_id, [s]), new=True)
            store.add_sighting(conn, s)
        assert store.owners(conn, ["a", "bb", "gone"]) == {"a": "c1", "bb": "c2"}
        store.move_members(conn, "c2", "c1")
        assert store.owners(conn, ["bb"]) == {"bb": "c1"} and store.owners(conn, []) == {}
