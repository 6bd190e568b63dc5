"""Gallery changes recorded by the review store: enrolled photos kept viewable for reviewers, erased ones marked.

A mixin of :class:`rfr.review.store.ReviewStore`: every change is audited (gallery_enrolment / gallery_erasure) in
the transaction that records it, with the change's actor and reason.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Connection, Engine, insert, select, update

from rfr.core.review_messages import GalleryChange
from rfr.review import tables as t
from rfr.review.outbox import AuditSink
from rfr.review.views import GalleryChangeResult

GALLERY_ROLE = "operator"
"""Audit role of a gallery change's actor (the person who ran ``rfr enrol`` / ``rfr gallery delete``)."""


class GalleryChanges:
    """Recording gallery changes (a mixin of :class:`rfr.review.store.ReviewStore`)."""

    engine: Engine
    audit: AuditSink
    clock: Callable[[], datetime]

    def record_gallery_change(self, change: GalleryChange) -> GalleryChangeResult:
        """Keep enrolled photos viewable (``gallery_photos``) or mark erased ones, audited as gallery_enrolment /
        gallery_erasure with the change's actor and reason. Idempotent on ``event_id``."""
        with self.engine.begin() as conn:
            if conn.execute(select(t.gallery_changes.c.event_id)
                            .where(t.gallery_changes.c.event_id == change.event_id)).first():
                return GalleryChangeResult(new=False, photos=0, orphaned_photo_refs=[])
            conn.execute(insert(t.gallery_changes).values(
                event_id=change.event_id, action=change.action, watch_list=change.watch_list,
                model_id=change.model_id, at=change.at, actor=change.actor, reason=change.reason,
                face_count=len(change.faces), recorded_at=self.clock()))
            orphaned: list[str] = []
            if change.action == "enrolled":
                written = self._enrol_photos(conn, change)
            else:
                written, orphaned = self._erase_photos(conn, change)
            action = "gallery_enrolment" if change.action == "enrolled" else "gallery_erasure"
            self.audit.append(conn, change.actor, GALLERY_ROLE, action, reason=change.reason, details={
                "event_id": change.event_id, "watch_list": change.watch_list, "model_id": change.model_id,
                "at": change.at.isoformat(), "faces": [[f.face_id, f.subject_id] for f in change.faces],
                "photos_written": written})
            return GalleryChangeResult(new=True, photos=written, orphaned_photo_refs=orphaned)

    def _enrol_photos(self, conn: Connection, change: GalleryChange) -> int:
        gp = t.gallery_photos
        for face in change.faces:
            values = {"subject_id": face.subject_id, "watch_list": change.watch_list, "model_id": change.model_id,
                      "photo_ref": face.photo_ref, "source_ref": face.source_ref, "enrolled_at": change.at,
                      "erased_at": None}
            done = conn.execute(update(gp).where(gp.c.gallery_face_id == face.face_id).values(**values))
            if not done.rowcount:
                conn.execute(insert(gp).values(gallery_face_id=face.face_id, **values))
        return len(change.faces)

    def _erase_photos(self, conn: Connection, change: GalleryChange) -> tuple[int, list[str]]:
        gp = t.gallery_photos
        ids = [f.face_id for f in change.faces]
        refs = {r for r in conn.execute(select(gp.c.photo_ref).where(gp.c.gallery_face_id.in_(ids))).scalars() if r}
        erased = conn.execute(update(gp).where(gp.c.gallery_face_id.in_(ids), gp.c.erased_at.is_(None))
                              .values(erased_at=change.at)).rowcount
        live = set(conn.execute(select(gp.c.photo_ref).where(gp.c.photo_ref.in_(refs), gp.c.erased_at.is_(None)))
                   .scalars()) if refs else set()
        return erased, sorted(refs - live)
