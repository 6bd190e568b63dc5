"""Alembic history of match's pending-incident store (services/match/incidents.py)."""
