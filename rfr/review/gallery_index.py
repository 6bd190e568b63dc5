"""The gallery as the review store knows it: subjects and their enrolled photos by watch-list (``gallery_photos``).

The review store keeps one row per enrolled photo it was told of (``rfr.gallery.v1``, see
:meth:`rfr.review.store.ReviewStore.record_gallery_change`): an erased photo keeps its row, stamped ``erased_at``,
and is no longer viewable. This module reads those rows for the administrators' gallery page; it changes nothing.
The gallery itself (the templates searched) is in Milvus; the page's erase form erases there and announces it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, Select, and_, distinct, func, or_, select

from rfr.review import tables as t

MAX_PAGE = 200
"""Most subjects one page lists."""


@dataclass(frozen=True)
class GalleryPhoto:
    """One enrolled photo; ``photo_ref`` is None when the photo was not kept (enrolled before the review service
    or offline); ``erased_at`` is set once the subject was erased."""

    gallery_face_id: str
    model_id: str
    photo_ref: str | None
    source_ref: str
    enrolled_at: datetime
    erased_at: datetime | None

    @property
    def erased(self) -> bool:
        return self.erased_at is not None

    @property
    def viewable(self) -> bool:
        return self.photo_ref is not None and self.erased_at is None


@dataclass(frozen=True)
class GallerySubject:
    """A subject on one watch-list, with every photo known of them there (oldest enrolment first)."""

    watch_list: str
    subject_id: str
    photos: tuple[GalleryPhoto, ...]

    @property
    def live_photos(self) -> int:
        return sum(1 for p in self.photos if not p.erased)

    @property
    def erased(self) -> bool:
        """Every photo erased: the subject is no longer on this watch-list."""
        return self.live_photos == 0


@dataclass(frozen=True)
class WatchListSummary:
    """Counts of one watch-list: subjects with a live photo, photos not erased, photos erased."""

    watch_list: str
    subjects: int
    photos: int
    erased_photos: int


@dataclass(frozen=True)
class GalleryPage:
    """One page of subjects (by watch-list, then subject id) and how many match the filters in all."""

    subjects: list[GallerySubject]
    total: int
    limit: int
    offset: int


def _filtered(query: Select[tuple[str, str]], watch_list: str | None, subject_contains: str | None,
              include_erased: bool) -> Select[tuple[str, str]]:
    gp = t.gallery_photos
    if watch_list:
        query = query.where(gp.c.watch_list == watch_list)
    if subject_contains:
        query = query.where(func.lower(gp.c.subject_id).contains(subject_contains.lower(), autoescape=True))
    if not include_erased:
        query = query.where(gp.c.erased_at.is_(None))
    return query


def gallery_page(engine: Engine, watch_list: str | None = None, subject_contains: str | None = None,
                 include_erased: bool = True, limit: int = 50, offset: int = 0) -> GalleryPage:
    """Subjects on ``watch_list`` (None: every one) whose id contains ``subject_contains`` (case-insensitive),
    ``limit`` (1..:data:`MAX_PAGE`) from ``offset``, each with every photo (erased ones too when
    ``include_erased``; a subject whose photos are all erased is then listed as erased)."""
    gp = t.gallery_photos
    limit, offset = max(1, min(limit, MAX_PAGE)), max(0, offset)
    pairs = _filtered(select(gp.c.watch_list, gp.c.subject_id).distinct(), watch_list, subject_contains,
                      include_erased)
    with engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(pairs.subquery())).scalar_one()
        keys = [(r.watch_list, r.subject_id) for r in conn.execute(
            pairs.order_by(gp.c.watch_list, gp.c.subject_id).limit(limit).offset(offset))]
        photos: dict[tuple[str, str], list[GalleryPhoto]] = {k: [] for k in keys}
        if keys:
            query = select(gp).where(or_(*(and_(gp.c.watch_list == w, gp.c.subject_id == s) for w, s in keys)))
            if not include_erased:
                query = query.where(gp.c.erased_at.is_(None))
            for row in conn.execute(query.order_by(gp.c.enrolled_at, gp.c.gallery_face_id)):
                photos[(row.watch_list, row.subject_id)].append(GalleryPhoto(
                    row.gallery_face_id, row.model_id, row.photo_ref, row.source_ref, row.enrolled_at, row.erased_at))
    return GalleryPage([GallerySubject(w, s, tuple(photos[(w, s)])) for w, s in keys], int(total), limit, offset)


def watch_lists(engine: Engine) -> list[WatchListSummary]:
    """Every watch-list the review store knows a photo of, with its counts, by name."""
    gp = t.gallery_photos
    live = gp.c.erased_at.is_(None)
    query = (select(gp.c.watch_list, func.count(distinct(gp.c.subject_id)).filter(live).label("subjects"),
                    func.count().filter(live).label("photos"), func.count().filter(~live).label("erased"))
             .group_by(gp.c.watch_list).order_by(gp.c.watch_list))
    with engine.connect() as conn:
        return [WatchListSummary(r.watch_list, int(r.subjects), int(r.photos), int(r.erased))
                for r in conn.execute(query)]


def live_face_ids(engine: Engine, watch_list: str, subject_id: str) -> list[str]:
    """The gallery face ids of ``subject_id``'s photos on ``watch_list`` not yet erased here, sorted."""
    gp = t.gallery_photos
    with engine.connect() as conn:
        return sorted(conn.execute(select(gp.c.gallery_face_id).where(
            gp.c.watch_list == watch_list, gp.c.subject_id == subject_id, gp.c.erased_at.is_(None))).scalars())
