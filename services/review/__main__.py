"""``python -m services.review``: the review service (cases, decisions, audit log, retention, API)."""

from __future__ import annotations

import sys

from services.review.service import main

if __name__ == "__main__":
    sys.exit(main())
