"""``eventforge.observing``: kept for plugins and applications; the code lives in :mod:`eventforge.dispatch.observing`."""

from __future__ import annotations

from eventforge.dispatch.observing import (
    CallEvent as CallEvent,
)
from eventforge.dispatch.observing import (
    Eventful as Eventful,
)
from eventforge.dispatch.observing import (
    Listener as Listener,
)
from eventforge.dispatch.observing import (
    Observable as Observable,
)
from eventforge.dispatch.observing import (
    Observer as Observer,
)
from eventforge.dispatch.observing import (
    call_observed as call_observed,
)
from eventforge.dispatch.observing import (
    call_observed_async as call_observed_async,
)
from eventforge.dispatch.observing import (
    observe as observe,
)

__all__ = [
    "CallEvent",
    "Eventful",
    "Listener",
    "Observable",
    "Observer",
    "call_observed",
    "call_observed_async",
    "observe",
]
