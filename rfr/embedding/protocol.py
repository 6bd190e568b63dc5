"""What a caller needs of a face embedder, without importing torch: the crop size, the template size and the
:class:`Embedder` protocol (:class:`rfr.embedding.embedder.FacenetEmbedder` implements it)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

CROP_SIZE = 160  # px: the aligned crop side FaceNet (InceptionResnetV1) was trained on
EMBEDDING_DIM = 512  # float32 values in one template (InceptionResnetV1's last layer)


@runtime_checkable
class Embedder(Protocol):
    """Turns aligned face crops into L2-normalised templates."""

    model_id: str
    weights_sha256: str
    dim: int

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """``crops``: N x 160 x 160 x 3 uint8 RGB. Returns N x ``dim`` float32, each row of unit length."""
        ...
