"""The gallery an evaluation enrols into and searches: the real Milvus gallery, or the exact in-memory one.

``milvus`` (the default) exercises the deployed search code path: :class:`rfr.gallery.milvus.MilvusGallery`
on a milvus-lite server started for the run (as ``rfr up`` starts it) or on ``--milvus-uri``, in a collection
with a unique prefix that is dropped afterwards. ``memory`` is the exact brute-force gallery with the same
semantics (per-subject ranking), for quick runs without a server.
"""

from __future__ import annotations

import logging
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from rfr.core.ids import to_ident
from rfr.core.settings import MilvusSettings
from rfr.tools import procs

if TYPE_CHECKING:
    from rfr.gallery.base import Gallery

logger = logging.getLogger(__name__)

GalleryKind = Literal["milvus", "memory"]
EVAL_WATCH_LIST = "eval"  # the watch-list an evaluation enrols onto and searches


def subject_id_for(identity: str) -> str:
    """A gallery-safe subject id for a folder name (unsafe characters become ``_``; at most 128 characters)."""
    return to_ident(identity)


@contextmanager
def milvus_server(work_dir: Path, start_timeout_s: float = 90.0) -> Iterator[str]:
    """A milvus-lite server on a free loopback port for the duration of the block; yields its URI."""
    port = procs.free_port()
    info, proc = procs.spawn("milvus-eval", procs.milvus_argv(work_dir / "milvus", port), work_dir / "logs")
    try:
        procs.wait_port("127.0.0.1", port, start_timeout_s, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        procs.stop(info)
        try:
            proc.wait(5)
        except Exception:  # noqa: BLE001 - best effort: the process was already signalled
            logger.warning("milvus-lite (pid %s) did not exit", proc.pid)


@contextmanager
def open_eval_gallery(kind: GalleryKind, milvus: MilvusSettings, model_id: str, weights_sha256: str,
                      uri: str | None = None) -> Iterator[Gallery]:
    """An empty gallery for one evaluation; everything it held is dropped on exit."""
    if kind == "memory":
        from rfr.gallery.memory import InMemoryGallery

        yield InMemoryGallery(model_id)
        return
    if uri is not None:
        with _milvus_gallery(milvus, uri, model_id, weights_sha256) as gallery:
            yield gallery
        return
    with (
        tempfile.TemporaryDirectory(prefix="rfr-eval-milvus-") as tmp,
        milvus_server(Path(tmp)) as local_uri,
        _milvus_gallery(milvus, local_uri, model_id, weights_sha256) as gallery,
    ):
        yield gallery


@contextmanager
def _milvus_gallery(milvus: MilvusSettings, uri: str, model_id: str, weights_sha256: str) -> Iterator[Gallery]:
    from rfr.gallery.milvus import MilvusGallery

    prefix = f"rfr_eval_{uuid.uuid4().hex[:10]}"
    settings = milvus.model_copy(update={"uri": uri, "collection_prefix": prefix})
    gallery = MilvusGallery(settings, model_id, weights_sha256=weights_sha256)
    logger.info("evaluation gallery: Milvus at %s, collection %s (%s)", uri, gallery.collection, settings.index_type)
    try:
        yield gallery
    finally:
        try:
            gallery.drop()
        except Exception:
            logger.exception("could not drop the evaluation collection %s", gallery.collection)
        gallery.close()
