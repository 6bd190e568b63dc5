"""The review service: candidate lists become cases that trained people decide, two by two.

Consumes ``rfr.matches.v1`` (cases) and ``rfr.gallery.v1`` (enrolled photos, erasures, re-search of unsolved
probes); publishes final decisions on ``rfr.decisions.v1``; serves the review API (FastAPI) with role checks on
every endpoint; runs retention and signs audit checkpoints on a schedule. The rules, storage and audit log are
:mod:`rfr.review`'s; this package wires them to Kafka and HTTP (:mod:`services.review.service`).
"""
