"""RFR embed service."""
