"""``python -m services.embed``: the embed stage (FACES -> EMBEDDINGS).

The model is loaded before anything else, so a missing or altered weights file stops the service at once
with exit code 2 and a message that names the fix (``rfr models fetch``).
"""

from __future__ import annotations

import logging
import sys

from rfr.core.logs import setup_logging
from rfr.core.settings import Settings, settings_or_exit
from rfr.core.stage import StageSpec, run_stage
from rfr.core.stream import BatchHandler
from rfr.core.topics import FACES, Topics
from rfr.embedding.device import DeviceUnavailableError
from rfr.embedding.embedder import FacenetEmbedder, load_embedder
from rfr.models import ModelMissingError
from services.embed.handler import EmbedHandler
from services.embed.metrics import EmbedMetrics

logger = logging.getLogger(__name__)

SERVICE = "embed"
GROUP = "rfr-embed"
EXIT_NO_MODEL = 2


def stage_spec(settings: Settings) -> StageSpec:
    return StageSpec(service=SERVICE, group=GROUP, inputs=[FACES], metrics_port=settings.metrics.embed_port,
                     batch_size=settings.embed.batch_size, batch_timeout_ms=settings.embed.batch_timeout_ms)


def main() -> int:
    settings = settings_or_exit("rfr-embed")
    setup_logging(settings.log_level, json_lines=settings.log_json, service=SERVICE)
    try:
        embedder: FacenetEmbedder = load_embedder(settings.embed, settings.model_dir).load()
    except (ModelMissingError, DeviceUnavailableError) as exc:
        logger.error("embed cannot start: %s", exc)
        return EXIT_NO_MODEL
    metrics = EmbedMetrics.create()
    metrics.set_model(embedder.model_id, embedder.weights_sha256, embedder.runtime.device, embedder.runtime.precision)

    def make_handler(_settings: Settings, topics: Topics) -> BatchHandler:
        return EmbedHandler(embedder, topics, metrics)

    run_stage(settings, stage_spec(settings), make_handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
