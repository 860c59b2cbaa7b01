"""Test helpers for eventforge and for the authors of transports and plugins.

- :mod:`eventforge.testing.conformance`: :class:`TransportConformance`, the Transport contract
  as a pytest base class (subclass it and provide a ``make_transport`` fixture);
  :mod:`~eventforge.testing.queue_conformance` and
  :mod:`~eventforge.testing.workqueue_conformance` do the same for MessageQueue / RPC over a
  transport and for durable work-queue backends, and
  :mod:`~eventforge.testing.results_conformance` for result stores
  (:mod:`~eventforge.testing.results_processes`: their results read across processes).
- :mod:`eventforge.testing.pytest_plugin`: fixtures that start private ``redis-server`` /
  ``nats-server`` processes, loaded by pytest through the ``pytest11`` entry point of
  eventforge-core (install ``eventforge-core[testing]``).
- :mod:`eventforge.testing.brokers` and :mod:`eventforge.testing.history`: broker processes and
  the delivery-history checker used by fault tests.
- :mod:`eventforge.testing.resources`: count the threads, file descriptors and sockets a
  process holds, to prove that closing gives back everything opening took.
- :func:`~eventforge.testing.deadline_checks.check_expired_request_never_reaches_a_handler`:
  the request-deadline scenario, for transports that do not run the queue conformance suite.
- :func:`~eventforge.testing.waiting.wait_until`: poll for a condition another thread or
  process brings about, and report whether it did (for ``assert wait_until(...)``).
- :mod:`eventforge.testing.schedules`: run a periodic schedule in real worker processes and
  check that each tick fired once (transports with the ``claims`` capability).

Names load on first use, so importing this package does not import pytest; the conformance
suite and the fixtures do.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["Collector", "TransportConformance", "TransportFactory", "wait_until"]

_EXPORTS = {
    "Collector": "conformance",
    "TransportConformance": "conformance",
    "TransportFactory": "conformance",
    "wait_until": "waiting",
}

if TYPE_CHECKING:
    from eventforge.testing.conformance import Collector as Collector
    from eventforge.testing.conformance import TransportConformance as TransportConformance
    from eventforge.testing.conformance import TransportFactory as TransportFactory
    from eventforge.testing.waiting import wait_until as wait_until


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'eventforge.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
