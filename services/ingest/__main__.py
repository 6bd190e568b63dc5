"""``python -m services.ingest``: the Kafka and HTTP submission channels and the status consumer."""

from __future__ import annotations

import sys

from services.ingest.service import main

if __name__ == "__main__":
    sys.exit(main())
