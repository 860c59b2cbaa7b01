"""Where a subscription's coroutines run: one event loop, with the tasks kept referenced."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from eventforge.transport import background_loop

__all__ = ["LoopRunner"]


class LoopRunner:
    """Schedules coroutines of one subscription on one event loop and keeps them referenced."""

    __slots__ = ("_tasks", "loop", "thread_id")

    def __init__(self, loop: asyncio.AbstractEventLoop, thread_id: int | None) -> None:
        self.loop = loop
        self.thread_id = thread_id
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def for_caller(cls) -> LoopRunner:
        """Use the loop running in the calling thread, else the shared background loop."""
        return cls.running() or cls.background()

    @classmethod
    def running(cls) -> LoopRunner | None:
        """The loop running in the calling thread, if any."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        return cls(loop, threading.get_ident())

    @classmethod
    def background(cls) -> LoopRunner:
        """The shared background loop (started on first use)."""
        bg = background_loop()
        return cls(bg.loop, bg.thread.ident)

    def schedule(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` on the loop; raises ``RuntimeError`` when the loop is closed."""
        if threading.get_ident() == self.thread_id:
            self._start(coro)
        else:
            self.loop.call_soon_threadsafe(self._start, coro)

    def _start(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def wait_idle(self, timeout: float) -> bool:
        """Block until every coroutine scheduled so far finished; ``False`` after ``timeout``.

        Call it from another thread than the loop's (from the loop's own thread it returns
        ``False`` at once: waiting there would deadlock).
        """
        if threading.get_ident() == self.thread_id or self.loop.is_closed():
            return not self._tasks

        async def settle() -> None:
            # Callbacks queued before this coroutine (tasks being started) run before it does.
            while self._tasks:
                await asyncio.wait(set(self._tasks))

        try:
            future = asyncio.run_coroutine_threadsafe(settle(), self.loop)
        except RuntimeError:  # the loop closed meanwhile
            return not self._tasks
        try:
            future.result(max(0.0, timeout))
        except FutureTimeout:  # the builtin TimeoutError from Python 3.11; its own class on 3.10
            future.cancel()
            return False
        return True
