"""`python -m services.detect`: the detect stage (FRAMES -> FACES + OUTCOMES).

A missing detector model stops the service at once with exit code 2 and a message naming `rfr models fetch`.
"""

from __future__ import annotations

import logging
import sys

from rfr.core.blobstore import FileBlobStore
from rfr.core.logs import setup_logging
from rfr.core.settings import Settings, settings_or_exit
from rfr.core.stage import StageSpec, run_stage
from rfr.core.stream import BatchHandler
from rfr.core.topics import FRAMES, Topics
from rfr.face.runners import make_detector
from rfr.models import ModelMissingError, detector_model_path
from services.detect.handler import FrameHandler
from services.detect.metrics import DetectMetrics

logger = logging.getLogger(__name__)

SERVICE = "detect"
EXIT_NO_MODEL = 2


def main() -> int:
    settings = settings_or_exit("rfr-detect")
    setup_logging(settings.log_level, json_lines=settings.log_json, service=SERVICE)
    try:
        detector_model_path(settings.model_dir)
    except ModelMissingError as exc:
        logger.error("detect cannot start: %s", exc)
        return EXIT_NO_MODEL

    def make_handler(s: Settings, topics: Topics) -> BatchHandler:
        detector = make_detector(s.detect, s.model_dir)
        return FrameHandler(s, topics, detector, FileBlobStore(s.blob_dir), DetectMetrics.create())

    # frames are handled one by one: waiting for a batch would only add latency
    spec = StageSpec(SERVICE, "rfr-detect", [FRAMES], settings.metrics.detect_port, batch_size=4, batch_timeout_ms=0)
    run_stage(settings, spec, make_handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
