"""RFR detect service."""
