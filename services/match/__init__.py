"""RFR match service: the gallery, enrolment, the search stage and threshold calibration.

- :mod:`services.match.gallery`: the ``Gallery`` protocol, its records, errors and per-subject ranking.
- :mod:`services.match.milvus_gallery` (+ :mod:`~services.match.milvus_schema`): the gallery on Milvus by URI.
- :mod:`services.match.memory`: an exact in-memory gallery (tests, quick evaluations).
- :mod:`services.match.pipeline`: gallery photos through the probes' decode/detect/align/embed path.
- :mod:`services.match.enrol`: folder / CSV enrolment, resumable; :mod:`~services.match.cli`: ``rfr enrol``,
  ``rfr gallery``, ``rfr calibrate``.
- :mod:`services.match.handler`: EmbeddingEvents -> CandidateLists + OutcomeEvents (``python -m services.match``).
- :mod:`services.match.calibrate` / :mod:`~services.match.faceset`: thresholds for a target false-match rate.
"""
