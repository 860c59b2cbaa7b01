"""``eventforge.middleware``: kept for plugins and applications; the code lives in :mod:`eventforge.dispatch.middleware`."""

from __future__ import annotations

from eventforge.dispatch.middleware import (
    ContextHeader as ContextHeader,
)
from eventforge.dispatch.middleware import (
    Dedupe as Dedupe,
)
from eventforge.dispatch.middleware import (
    Middleware as Middleware,
)
from eventforge.dispatch.middleware import (
    UnknownMiddlewareError as UnknownMiddlewareError,
)
from eventforge.dispatch.middleware import (
    compose_send as compose_send,
)
from eventforge.dispatch.middleware import (
    register_middleware as register_middleware,
)
from eventforge.dispatch.middleware import (
    resolve_middleware as resolve_middleware,
)
from eventforge.dispatch.middleware import (
    wrap_handler as wrap_handler,
)

__all__ = [
    "ContextHeader",
    "Dedupe",
    "Middleware",
    "UnknownMiddlewareError",
    "compose_send",
    "register_middleware",
    "resolve_middleware",
    "wrap_handler",
]
