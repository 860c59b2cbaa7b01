"""eventforge-redis: the ``redis`` transport for eventforge.

Import :class:`RedisTransport` from ``eventforge.transports.redis`` (or from here); redis-py is
imported only when a transport is created.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._connect import RedisAuthError, RedisPermissionError, RedisSettings

__version__ = "0.1.0"
__all__ = [
    "RedisAuthError",
    "RedisPermissionError",
    "RedisSettings",
    "RedisTransport",
    "RedisWorkQueueBackend",
    "__version__",
]

if TYPE_CHECKING:
    from .transport import RedisTransport
    from .workqueue import RedisWorkQueueBackend


def __getattr__(name: str) -> Any:
    if name == "RedisTransport":
        from .transport import RedisTransport

        return RedisTransport
    if name == "RedisWorkQueueBackend":
        from .workqueue import RedisWorkQueueBackend

        return RedisWorkQueueBackend
    raise AttributeError(f"module 'eventforge_redis' has no attribute {name!r}")
