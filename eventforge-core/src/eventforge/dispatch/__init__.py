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
from eventforge.dispatch._groups import GroupBinding as GroupBinding
from eventforge.dispatch._handler_thread import HandlerThread as HandlerThread
from eventforge.dispatch._invokers import Invoker as Invoker
from eventforge.dispatch._invokers import delivering_for as delivering_for
from eventforge.dispatch._invokers import is_coroutine_handler as is_coroutine_handler
from eventforge.dispatch._invokers import make_invoker as make_invoker
from eventforge.dispatch._loop_runner import LoopRunner as LoopRunner

__all__ = [
    "BroadcastDispatcher",
    "ConcurrentDispatcher",
    "DispatchError",
    "Dispatcher",
    "GroupBinding",
    "HandlerThread",
    "Invoker",
    "LeastLoadedDispatcher",
    "LoopRunner",
    "RoundRobinDispatcher",
    "delivering_for",
    "get_dispatcher",
    "is_coroutine_handler",
    "make_invoker",
]
