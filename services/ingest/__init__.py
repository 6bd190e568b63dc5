"""RFR ingest service."""
