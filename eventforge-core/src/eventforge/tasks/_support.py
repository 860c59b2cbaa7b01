"""The pieces a ``@task`` carries besides its body: a concurrency pool and shared state."""

from __future__ import annotations

import asyncio
import enum
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from eventforge.errors import EventforgeError

__all__ = ["SharedState", "TaskPool", "TaskPoolTimeout"]


class _Default(enum.Enum):
    POOL = "the pool's instance_timeout"


_POOL_DEFAULT = _Default.POOL

_AsyncWaiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]


def _resolve(future: asyncio.Future[None]) -> None:
    """Wake an async waiter (runs on its loop); a cancelled or timed-out one is left alone."""
    if not future.done():
        future.set_result(None)


class TaskPoolTimeout(EventforgeError, TimeoutError):
    """No execution slot of a task with ``max_instances`` freed up within ``instance_timeout``."""

    def __init__(self, task: str, max_instances: int, timeout: float) -> None:
        super().__init__(
            f"task {task!r} already runs max_instances={max_instances} instances and none "
            f"finished within instance_timeout={timeout} s; the call was not run. Raise "
            "max_instances or instance_timeout, or call less often"
        )
        self.task = task
        self.max_instances = max_instances
        self.timeout = timeout


class TaskPool:
    """At most ``max_instances`` concurrent executions; callers beyond that wait for a slot.

    ``timeout`` (seconds, ``None`` = wait forever) bounds the wait; past it the call fails with
    :class:`TaskPoolTimeout` and is counted in ``stats["rejected"]``.
    """

    def __init__(self, max_instances: int, timeout: float | None = None, name: str = "task"):
        if max_instances < 1:
            raise ValueError(f"max_instances must be >= 1, got {max_instances}")
        if timeout is not None and timeout < 0:
            raise ValueError(f"instance_timeout must be >= 0, got {timeout}")
        self.max_instances = max_instances
        self.timeout = timeout
        self.name = name
        self._cond = threading.Condition()
        self._active = 0
        self._waiting = 0
        self._completed = 0
        self._rejected = 0
        self._peak = 0
        # Async callers waiting for a slot, oldest first; release() resolves one's future.
        self._async_waiters: deque[_AsyncWaiter] = deque()

    def _take(self) -> None:
        self._active += 1
        if self._active > self._peak:
            self._peak = self._active

    def acquire(self, timeout: float | _Default | None = _POOL_DEFAULT) -> None:
        """Take a slot, waiting up to ``timeout`` (default: the pool's); raise when none frees."""
        limit = self.timeout if isinstance(timeout, _Default) else timeout
        with self._cond:
            if self._active < self.max_instances:
                self._take()
                return
            self._waiting += 1
            try:
                ok = self._cond.wait_for(lambda: self._active < self.max_instances, limit)
            finally:
                self._waiting -= 1
            if not ok:
                self._rejected += 1
                raise TaskPoolTimeout(self.name, self.max_instances, limit or 0.0)
            self._take()

    async def acquire_async(self, timeout: float | _Default | None = _POOL_DEFAULT) -> None:
        """Take a slot without blocking the running loop; safe to cancel.

        The caller waits on a future of its own loop, which the next :meth:`release` (from any
        thread, sync or async caller alike) resolves with ``call_soon_threadsafe``: no polling.
        A woken caller takes the slot if it is still free (a newcomer may have taken it first)
        and waits again otherwise. A caller cancelled or timed out after being woken passes the
        wake-up on, so a free slot never goes unnoticed while others wait.
        """
        limit = self.timeout if isinstance(timeout, _Default) else timeout
        deadline = None if limit is None else time.monotonic() + limit
        loop = asyncio.get_running_loop()
        waiter: _AsyncWaiter | None = None
        counted = False
        try:
            while True:
                with self._cond:
                    if waiter is not None:
                        self._forget(waiter)
                        waiter = None
                    if self._active < self.max_instances:
                        self._take()
                        return
                    if not counted:
                        self._waiting += 1
                        counted = True
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        self._rejected += 1
                        raise TaskPoolTimeout(self.name, self.max_instances, limit or 0.0)
                    waiter = (loop, loop.create_future())
                    self._async_waiters.append(waiter)
                try:
                    await asyncio.wait_for(waiter[1], remaining)
                except asyncio.TimeoutError:
                    pass  # checked once more above, then rejected
        finally:
            with self._cond:
                if counted:
                    self._waiting -= 1
                # Still holding a waiter here means leaving without the slot (cancelled, or a
                # timeout). If a release already woke this caller, wake the next one instead,
                # or that release would be lost.
                if (
                    waiter is not None
                    and not self._forget(waiter)
                    and self._active < self.max_instances
                ):
                    self._wake_one()

    def _forget(self, waiter: _AsyncWaiter) -> bool:
        """Drop ``waiter`` from the queue; return whether it was still there (never woken)."""
        try:
            self._async_waiters.remove(waiter)
        except ValueError:
            return False
        return True

    def _wake_one(self) -> None:
        """Wake one waiter (call with the lock held): a sync one and the oldest async one.

        Both may be woken for one slot; the one that loses the race waits again.
        """
        self._cond.notify()
        while self._async_waiters:
            loop, future = self._async_waiters.popleft()
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:  # its loop is closed: nobody waits there any more
                continue
            return

    def release(self) -> None:
        """Give a slot back (exactly once per successful acquire); wakes one waiter."""
        with self._cond:
            if self._active <= 0:
                raise RuntimeError(f"TaskPool {self.name!r} released more often than acquired")
            self._active -= 1
            self._completed += 1
            self._wake_one()

    @contextmanager
    def slot(self, timeout: float | _Default | None = _POOL_DEFAULT) -> Iterator[None]:
        """``with pool.slot(): ...`` runs the block in one slot."""
        self.acquire(timeout)
        try:
            yield
        finally:
            self.release()

    @property
    def stats(self) -> dict[str, Any]:
        """``max_instances``, ``active``, ``waiting``, ``completed``, ``rejected``, ``peak``."""
        with self._cond:
            return {
                "max_instances": self.max_instances,
                "active": self._active,
                "waiting": self._waiting,
                "completed": self._completed,
                "rejected": self._rejected,
                "peak": self._peak,
            }

    def __repr__(self) -> str:
        return f"TaskPool({self.name!r}, max_instances={self.max_instances})"


class SharedState:
    """A thread-safe dict shared by every invocation of one task.

    Single reads and writes are atomic; read-modify-write goes through :meth:`increment`,
    :meth:`compute` or ``with state.locked() as data:`` so that concurrent invocations never
    lose an update.
    """

    def __init__(self, initial: Mapping[str, Any] | None = None) -> None:
        self._data: dict[str, Any] = dict(initial or {})
        self._lock = threading.RLock()

    def __getitem__(self, key: str) -> Any:
        with self._lock:
            return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        with self._lock:
            self._data[key] = value

    def __delitem__(self, key: str) -> None:
        with self._lock:
            del self._data[key]

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._data

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default``."""
        with self._lock:
            return self._data.get(key, default)

    def setdefault(self, key: str, default: Any = None) -> Any:
        """Set ``key`` to ``default`` unless present; return its value (atomically)."""
        with self._lock:
            return self._data.setdefault(key, default)

    def pop(self, key: str, default: Any = None) -> Any:
        """Remove ``key`` and return its value, or ``default``."""
        with self._lock:
            return self._data.pop(key, default)

    def update(self, other: Mapping[str, Any] | None = None, /, **values: Any) -> None:
        """Set several keys at once, atomically (like ``dict.update``)."""
        with self._lock:
            if other:
                self._data.update(other)
            self._data.update(values)

    def increment(self, key: str, amount: float = 1) -> Any:
        """Add ``amount`` to ``key`` (missing = 0) atomically; return the new value."""
        with self._lock:
            value = self._data.get(key, 0) + amount
            self._data[key] = value
            return value

    def compute(self, key: str, func: Callable[[Any], Any], default: Any = None) -> Any:
        """Replace ``key``'s value (``default`` when missing) with ``func(value)``, atomically."""
        with self._lock:
            value = func(self._data.get(key, default))
            self._data[key] = value
            return value

    @contextmanager
    def locked(self) -> Iterator[dict[str, Any]]:
        """Hold the lock and work on the underlying dict directly for a multi-step change."""
        with self._lock:
            yield self._data

    def keys(self) -> list[str]:
        """A snapshot of the keys."""
        with self._lock:
            return list(self._data)

    def items(self) -> list[tuple[str, Any]]:
        """A snapshot of the items."""
        with self._lock:
            return list(self._data.items())

    def to_dict(self) -> dict[str, Any]:
        """A shallow copy of the contents."""
        with self._lock:
            return dict(self._data)

    def clear(self) -> None:
        """Remove everything."""
        with self._lock:
            self._data.clear()

    def __repr__(self) -> str:
        return f"SharedState({self.to_dict()!r})"
