"""RFR: retrospective facial recognition pipeline (shared package)."""

__version__ = "0.1.0"
