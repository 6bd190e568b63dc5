"""The one lifecycle every model follows (as immich's ML models share one base class).

Constructed cheaply (files located and verified, nothing loaded); :meth:`Model.load` builds it once and returns
it (later calls return the same); :meth:`Model.close` frees its native memory (a later ``load`` builds it again);
``model_id`` names the weights for every template or detection it makes. The services load their models before
consuming (a missing or altered file stops them with exit code 2) and close them at shutdown.
"""

from __future__ import annotations

from typing import Protocol, Self, runtime_checkable


@runtime_checkable
class Model(Protocol):
    model_id: str

    def load(self) -> Self:
        """Build the model now if it is not built yet (idempotent, thread-safe); returns it."""
        ...

    def close(self) -> None:
        """Free the model; a later :meth:`load` (or first use) builds it again."""
        ...
