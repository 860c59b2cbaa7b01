"""Test helpers for eventforge and for the authors of transports and plugins.

- :mod:`eventforge.testing.conformance`: :class:`TransportConformance`, the Transport contract
  as a pytest base class (subclass it and provide a ``make_transport`` fixture);
  :mod:`~eventforge.testing.queue_conformance` and
  :mod:`~eventforge.testing.workqueue_conformance` do the same for MessageQueue / RPC over a
  transport and for durable work-queue backends.
- :mod:`eventforge.testing.pytest_plugin`: fixtures that start private ``redis-server`` /
  ``nats-server`` processes (``pytest_plugins = ["eventforge.testing.pytest_plugin"]``).
- :mod:`eventforge.testing.brokers` and :mod:`eventforge.testing.history`: broker processes and
  the delivery-history checker used by fault tests.

Names load on first use, so importing this package does not import pytest; the conformance
suite and the fixtures do.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["Collector", "TransportConformance", "TransportFactory"]

_EXPORTS = {
    "Collector": "conformance",
    "TransportConformance": "conformance",
    "TransportFactory": "conformance",
}

if TYPE_CHECKING:
    from .conformance import Collector as Collector
    from .conformance import TransportConformance as TransportConformance
    from .conformance import TransportFactory as TransportFactory


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'eventforge.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
