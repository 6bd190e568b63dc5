"""What the tests share: fakes of Kafka, of the models and of the enrolment extractor, generated stills, and the
helpers that drive a real broker or the whole local stack. One copy of each; a test file defines only what is its
own.

Import as ``from support.kafka import FakeMsg``: ``tests/`` has no ``__init__.py``, so pytest puts it on
``sys.path`` (beside the root ``tests/conftest.py``), with ``pytest`` and ``python -m pytest`` alike. Shared
fixtures live in :mod:`support.fixtures`, which ``tests/conftest.py`` loads as a plugin (no import needed).

- :mod:`support.kafka`: ``FakeMsg``, ``FakeConsumer``, ``LogConsumer``, ``FakeProducer``, ``FakePublisher``
- :mod:`support.broker`: reading topics of a real broker (``read_until``, ``on``)
- :mod:`support.stills`: good and bad stills in every format, generated in code
- :mod:`support.faces`: ``FakeEmbedder``, ``FakeExtractor``, ``GridDetector``, fake gallery photos (``write``)
- :mod:`support.ingest`: an ``Ingestor`` on temporary storage, ``rfr submit`` wired to the HTTP app in-process
- :mod:`support.metrics`: a metric's value through the registry's public API
- :mod:`support.stack`: the ``rfr`` CLI as a user runs it, the local stack on free ports
- :mod:`support.fixtures`: ``cli_gallery`` (the enrol and gallery CLI on the fakes), ``registry`` (metrics)
"""
