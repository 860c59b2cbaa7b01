"""Dispatchers, handler invokers and threads, middleware and observers (layer 6)."""

from __future__ import annotations

from eventforge.dispatch._dispatchers import (
    BroadcastDispatcher as BroadcastDispatcher,
)
from eventforge.dispatch._dispatchers import (
    ConcurrentDispatcher as ConcurrentDispatcher,
)
from eventforge.dispatch._dispatchers import (
    Dispatcher as Dispatcher,
)
from eventforge.dispatch._dispatchers import (
    DispatchError as DispatchError,
)
from eventforge.dispatch._dispatchers import (
    LeastLoadedDispatcher as LeastLoadedDispatcher,
)
from eventforge.dispatch._dispatchers import (
    RoundRobinDispatcher as RoundRobinDispatcher,
)
from eventforge.dispatch._dispatchers import (
    get_dispatcher as get_dispatcher,
)
from eventforge.dispatch._handlers import GroupBinding as GroupBinding
from eventforge.dispatch._handlers import Invoker as Invoker
from eventforge.dispatch._handlers import LoopRunner as LoopRunner
from eventforge.dispatch._handlers import Worker as Worker
from eventforge.dispatch._handlers import delivering_for as delivering_for
from eventforge.dispatch._handlers import is_coroutine_handler as is_coroutine_handler
from eventforge.dispatch._handlers import make_invoker as make_invoker

__all__ = [
    "BroadcastDispatcher",
    "ConcurrentDispatcher",
    "DispatchError",
    "Dispatcher",
    "GroupBinding",
    "Invoker",
    "LeastLoadedDispatcher",
    "LoopRunner",
    "RoundRobinDispatcher",
    "Worker",
    "delivering_for",
    "get_dispatcher",
    "is_coroutine_handler",
    "make_invoker",
]
