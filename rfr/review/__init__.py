"""Domain layer: the review of candidate lists by trained people.

Cases made from candidate lists, two-person decisions, the hash-chained audit log, reviewers and their roles,
retention (purging probes) and re-search of unsolved probes against new enrolments. Storage is SQLAlchemy Core on
SQLite or PostgreSQL (:mod:`rfr.review.tables`), migrated by Alembic (``rfr/review/migrations``). Usable without
Kafka: the review service (``services/review``) wires it to the topics and the HTTP API.
"""
