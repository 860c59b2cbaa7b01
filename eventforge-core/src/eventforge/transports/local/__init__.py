"""``local://``: durable, broker-less messaging between the processes of one machine.

A SQLite database in WAL mode is the store (atomic, crash-safe, shared by every process that
opens the directory) and Unix-domain datagram sockets are the doorbells that wake a blocked
consumer when a message is committed. Standard library only. See ``docs/transports/local.md``.
"""

from __future__ import annotations

from eventforge.transports.local._options import OPTIONS
from eventforge.transports.local._publish import BacklogFull
from eventforge.transports.local._store import LocalStoreError, default_directory
from eventforge.transports.local._transport import LocalTransport
from eventforge.transports.local._workqueue import LocalWorkQueueBackend

__all__ = [
    "OPTIONS",
    "BacklogFull",
    "LocalStoreError",
    "LocalTransport",
    "LocalWorkQueueBackend",
    "default_directory",
]
