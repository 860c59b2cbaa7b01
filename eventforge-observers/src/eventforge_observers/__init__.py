"""eventforge-observers: meters, structured logging, OpenTelemetry, Prometheus and Logfire.

The meters and the reporter are importable from here and, through the plugin registry, from
``eventforge`` itself (``from eventforge import TimingMeter``). The integrations with optional
dependencies live in their own modules (``eventforge_observers.otel``, ``.prometheus``,
``.logfire``) and import their dependency only when used.
"""

from __future__ import annotations

from .meters import REDUCTIONS, CPUMeter, MemoryMeter, Meter, MetricsMeter, TimingMeter
from .reporting import LoggingReporter

__version__ = "0.1.0"
__all__ = [
    "REDUCTIONS",
    "CPUMeter",
    "LoggingReporter",
    "MemoryMeter",
    "Meter",
    "MetricsMeter",
    "TimingMeter",
    "__version__",
]
