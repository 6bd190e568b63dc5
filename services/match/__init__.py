"""RFR match service: the gallery, enrolment, the search stage and threshold calibration.

- :mod:`rfr.gallery.base`: the ``Gallery`` protocol, its records, errors and per-subject ranking.
- :mod:`rfr.gallery.milvus` (+ :mod:`~rfr.gallery.milvus_schema`): the gallery on Milvus by URI.
- :mod:`rfr.gallery.memory`: an exact in-memory gallery (tests, quick evaluations).
- :mod:`rfr.gallery.extraction`: gallery photos through the probes' decode/detect/align/embed path.
- :mod:`rfr.gallery.enrol`: folder / CSV enrolment, resumable; :mod:`~rfr.tools.gallery_cli`: ``rfr enrol``,
  ``rfr gallery``, ``rfr calibrate``.
- :mod:`services.match.handler`: EmbeddingEvents -> CandidateLists + OutcomeEvents (``python -m services.match``).
- :mod:`rfr.gallery.calibrate` / :mod:`~rfr.gallery.faceset`: thresholds for a target false-match rate.
"""
