"""One shared background event loop for the synchronous API.

Asyncio-only clients (nats-py) and coroutine handlers that were subscribed outside a running
loop run here. The loop lives in a daemon thread, starts on first use, and is replaced after
``fork`` (a child must not touch its parent's loop thread).
"""

from __future__ import annotations

import asyncio
import atexit
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Coroutine
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

__all__ = ["BackgroundLoop", "BoundLoop", "LoopHost", "background_loop", "run_sync"]

T = TypeVar("T")


class _LoopHost(ABC):
    """What :class:`BackgroundLoop` and :class:`BoundLoop` share: blocking on their loop."""

    loop: asyncio.AbstractEventLoop
    _blocking_here = "a blocking eventforge call was made on its own event loop"

    @abstractmethod
    def in_loop_thread(self) -> bool:
        """Tell whether the caller runs on this loop's thread."""

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Schedule ``coro`` on the loop from any thread; return a concurrent future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and block the calling thread for its result.

        Raises ``RuntimeError`` when called from the loop's own thread, where blocking would
        deadlock.
        """
        if self.in_loop_thread():
            coro.close()
            raise RuntimeError(self._blocking_here)
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except FutureTimeout:
            if future.done():
                # Raised by the coroutine itself (the caller gets it unchanged), or it finished
                # just after the wait gave up (the caller gets its result).
                return future.result()
            future.cancel()
            # The builtin class on every Python: on 3.10, concurrent.futures.TimeoutError is a
            # class of its own, which callers catching TimeoutError would miss.
            raise TimeoutError(f"the event loop did not finish the call in {timeout}s") from None


class BackgroundLoop(_LoopHost):
    """An event loop running forever in a daemon thread."""

    _blocking_here = (
        "a blocking eventforge call was made from the background event loop; use the "
        "*_async variant inside coroutines"
    )

    def __init__(self, name: str = "eventforge-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()
        self._ready.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    @property
    def ident(self) -> int | None:
        """The loop thread's identifier."""
        return self.thread.ident

    def in_loop_thread(self) -> bool:
        """Tell whether the caller runs on this loop's thread."""
        return threading.current_thread() is self.thread

    def stop(self) -> None:
        """Stop the loop and join its thread (used at interpreter exit)."""
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


class BoundLoop(_LoopHost):
    """The application's own running event loop, used like a :class:`BackgroundLoop`.

    A client bound to it (``NatsTransport.connect_async``) awaits its I/O directly from
    coroutines on that loop, with no thread hand-off; synchronous calls work from other
    threads (they block on the loop) but not from the loop's own thread, where blocking would
    deadlock.
    """

    _blocking_here = (
        "a blocking call was made on the event loop this eventforge client lives on (it was "
        "created with connect_async); await the *_async variant instead"
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._ident = threading.get_ident()

    @classmethod
    def running(cls) -> BoundLoop:
        """Bind to the loop running in the calling thread (``RuntimeError`` if none)."""
        return cls(asyncio.get_running_loop())

    @property
    def ident(self) -> int | None:
        """The loop thread's identifier."""
        return self._ident

    def in_loop_thread(self) -> bool:
        """Tell whether the caller runs on this loop's thread."""
        return threading.get_ident() == self._ident

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Schedule ``coro`` on the loop from another thread; return a concurrent future."""
        try:
            return asyncio.run_coroutine_threadsafe(coro, self.loop)
        except RuntimeError:
            coro.close()
            raise RuntimeError(
                "the event loop this eventforge client was bound to has closed; create the "
                "client again on a running loop"
            ) from None


LoopHost = BackgroundLoop | BoundLoop
"""Where an asyncio client lives: eventforge's background loop or the application's loop."""

_lock = threading.Lock()
_loop: BackgroundLoop | None = None


def background_loop() -> BackgroundLoop:
    """Return the process-wide background loop, starting it on first use."""
    global _loop
    if _loop is None:
        with _lock:
            if _loop is None:
                _loop = BackgroundLoop()
    return _loop


def run_sync(awaitable: Awaitable[T], timeout: float | None = None) -> T:
    """Run an awaitable on the background loop from synchronous code."""

    async def _wrap() -> T:
        return await awaitable

    return background_loop().run(_wrap(), timeout)


def _after_fork_in_child() -> None:
    global _loop, _lock
    _loop = None
    _lock = threading.Lock()


def _shutdown() -> None:
    if _loop is not None:
        _loop.stop()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_shutdown)
