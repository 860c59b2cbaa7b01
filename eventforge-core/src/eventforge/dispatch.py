"""Dispatchers: who, among several handlers, receives an event.

A dispatcher gets the candidate targets and an ``invoke(target)`` callable and decides which
target(s) to invoke and how: all of them (broadcast), the next one in turn (round-robin), the
one with the fewest calls in flight (least-loaded), or all of them in parallel (concurrent).
MessageQueue groups and RPC server pools pick their member through a dispatcher chosen by name.
"""

from __future__ import annotations

import itertools
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

__all__ = ["Dispatcher", "RoundRobinDispatcher", "get_dispatcher"]

T = TypeVar("T")


class Dispatcher(ABC):
    """Chooses the target(s) of one event. Implementations must be thread-safe."""

    name: ClassVar[str] = "dispatcher"
    selects_one: ClassVar[bool] = True
    """True when exactly one target receives each event (usable for competing consumers)."""

    @abstractmethod
    def dispatch(self, targets: Sequence[T], invoke: Callable[[T], Any]) -> None:
        """Deliver one event by calling ``invoke(target)`` for the chosen target(s).

        Exceptions raised by ``invoke`` propagate to the caller (the caller isolates handlers).
        """


class RoundRobinDispatcher(Dispatcher):
    """Each event goes to the next target in turn (the default for groups and pools)."""

    name = "round_robin"

    def __init__(self) -> None:
        self._turn = itertools.count()

    def dispatch(self, targets: Sequence[T], invoke: Callable[[T], Any]) -> None:
        if targets:
            invoke(targets[next(self._turn) % len(targets)])


_lock = threading.Lock()


def get_dispatcher(name_or_instance: str | Dispatcher | None = None) -> Dispatcher:
    """Return a new dispatcher by registry name (default ``round_robin``), or the instance given."""
    if isinstance(name_or_instance, Dispatcher):
        return name_or_instance
    name = name_or_instance or "round_robin"
    if name in ("round_robin", "round-robin", "roundrobin"):
        return RoundRobinDispatcher()
    from ._registry import load_named

    with _lock:
        factory = load_named("dispatcher", name)
    dispatcher = factory()
    if not isinstance(dispatcher, Dispatcher):
        raise TypeError(f"dispatcher plugin {name!r} produced {type(dispatcher).__name__}, not a Dispatcher")
    return dispatcher
