"""Transports. ``MemoryTransport`` ships in the core; the others are plugins.

``eventforge.transports.tcp``, ``.redis``, ``.nats`` and ``.amqp`` re-export the classes of the installed
plugin distribution (resolved through the plugin registry), or raise an ``ImportError`` that
names the distribution to install.
"""

from __future__ import annotations

from eventforge.transports._memory_results import MemoryResultStore as MemoryResultStore
from eventforge.transports._memory_workqueue import MemoryWorkQueueBackend as MemoryWorkQueueBackend
from eventforge.transports._memory_workqueue import WorkQueueFull as WorkQueueFull
from eventforge.transports.memory import MemoryTransport

__all__ = ["MemoryTransport"]
