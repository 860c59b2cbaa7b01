"""A connection supervisor: connect, serve, classify the error, back off, reconnect, restore.

Every network transport repeats the same loop around its client: open the connection (the
first attempt fails loudly: a wrong address or wrong credentials must not turn into a silent
retry storm), wait until the connection dies, tell a fatal error (refused credentials, a
certificate that does not verify) from a transient one (a broker restart, a dropped socket),
wait along the shared :class:`~eventforge.transport._kit.Backoff` curve, connect again and restore what
the application had set up (topology, subscriptions, consumers). :class:`Supervisor` is that
loop, on an asyncio event loop, with counters for ``stats()``.

The transport provides three coroutines: ``connect()`` returns a live connection,
``serve(conn)`` returns (or raises) when that connection is gone, and ``restore(conn)`` sets
up again what the previous connection carried. ``fatal(exc)`` classifies errors; ``alive(conn)``
tells a connection that is already gone (before ``serve`` returns) from a live one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from eventforge.errors import TransportClosedError, TransportError
from eventforge.transport._kit import Backoff
from eventforge.transport._supervision import ConnectionRecord

__all__ = ["Supervisor", "SupervisorFailed"]

log = logging.getLogger("eventforge.supervisor")

C = TypeVar("C")


class SupervisorFailed(TransportError):
    """The supervisor stopped reconnecting: the error was fatal (see ``cause``)."""

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class Supervisor(ConnectionRecord, Generic[C]):
    """Keeps one connection alive: connect → serve → classify → back off → reconnect → restore.

    ``start()`` makes the first attempt and raises its error unchanged (no retry: a wrong
    address or refused credentials are reported at once). Afterwards a background task waits
    for ``serve(conn)`` to end; unless the supervisor is closing, it counts a disconnect, then
    tries ``connect()`` + ``restore(conn)`` after each delay of ``backoff`` until one succeeds.
    An error for which ``fatal(exc)`` is true ends the loop: the state becomes ``"failed"``
    and :meth:`connection` raises :class:`SupervisorFailed` naming the cause.

    :meth:`connection` (a coroutine) waits, up to a timeout, for a live connection: publishers
    use it to ride out a reconnect instead of failing at the first dropped socket.
    """

    def __init__(
        self,
        name: str,
        connect: Callable[[], Awaitable[C]],
        serve: Callable[[C], Awaitable[Any]],
        restore: Callable[[C], Awaitable[None]],
        *,
        fatal: Callable[[BaseException], bool] = lambda exc: False,
        alive: Callable[[C], bool] = lambda conn: True,
        backoff: Backoff | None = None,
    ) -> None:
        self.name = name
        self._connect = connect
        self._serve = serve
        self._restore = restore
        self._fatal = fatal
        self._alive = alive
        self.backoff = backoff or Backoff(initial=0.1, cap=5.0)
        self._conn: C | None = None
        self._up: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        ConnectionRecord.__init__(self)

    @property
    def closing(self) -> bool:
        """Whether :meth:`close` was called (no reconnect after that)."""
        return self._closing

    def _stopped(self) -> bool:
        return self._closing

    @property
    def current(self) -> C | None:
        """The live connection, or ``None`` while there is none."""
        return self._conn if self.state == "connected" else None

    async def start(self) -> C:
        """Connect once (errors raise unchanged, nothing is retried) and start supervising."""
        if self._up is None:
            self._up = asyncio.Event()
        self.state = "connecting"
        try:
            conn = await self._connect()
        except BaseException as exc:
            self.state = "failed"
            self.last_error = exc
            raise
        self._set_up(conn)
        self.connects.bump()
        self._task = asyncio.get_running_loop().create_task(self._run(conn))
        return conn

    def _set_up(self, conn: C) -> None:
        assert self._up is not None
        self._conn = conn
        self.state = "connected"
        self._up.set()

    def _set_down(self) -> None:
        assert self._up is not None
        self._up.clear()
        self.state = "reconnecting"
        self._went_down()

    async def _run(self, conn: C) -> None:
        while True:
            try:
                await self._serve(conn)
            except BaseException as exc:
                if self._stopped() and isinstance(exc, asyncio.CancelledError):
                    raise
                self.last_error = exc
            if self._closing:
                return
            self.disconnects.bump()
            self._set_down()
            log.warning(
                "%s: the connection was lost (%r); reconnecting", self.name, self.last_error
            )
            new = await self._reconnect()
            if new is None:
                return
            conn = new

    async def _reconnect(self) -> C | None:
        attempt = 0
        while not self._stopped():
            attempt += 1
            await asyncio.sleep(self.backoff.delay(attempt))
            if self._stopped():
                return None
            try:
                conn = await self._connect()
            except BaseException as exc:
                # Only close() cancels this task; a client library may leak a CancelledError
                # of its own tasks out of a failed connect, which is just a failed attempt.
                if self._stopped() and isinstance(exc, asyncio.CancelledError):
                    raise
                if self._failed_attempt(exc, attempt, "connect"):
                    return None
                continue
            try:
                await self._restore(conn)
            except BaseException as exc:
                if self._stopped() and isinstance(exc, asyncio.CancelledError):
                    raise
                if self._failed_attempt(exc, attempt, "restore"):
                    return None
                continue
            self._came_back()
            self._set_up(conn)
            log.warning(
                "%s: reconnected after %d attempt(s), %.2f s down",
                self.name,
                attempt,
                self.last_recovery or 0.0,
            )
            return conn
        return None

    def _failed_attempt(self, exc: BaseException, attempt: int, step: str) -> bool:
        """Count a failed attempt; return True when it was fatal (the loop ends)."""
        self.failed_attempts.bump()
        self.last_error = exc
        if self._fatal(exc):
            self.state = "failed"
            if self._up is not None:
                self._up.set()  # wake waiters: they see the failed state
            log.error("%s: %s failed with a fatal error, giving up: %r", self.name, step, exc)
            return True
        if attempt in (1, 10, 100) or attempt % 1000 == 0:
            log.warning("%s: %s attempt %d failed: %r", self.name, step, attempt, exc)
        return False

    async def connection(self, timeout: float | None) -> C:
        """The live connection, waiting up to ``timeout`` seconds while reconnecting."""
        if self.state == "connected" and self._conn is not None:
            if self._alive(self._conn):
                return self._conn
            self._set_down()  # lost; serve() has not noticed yet
        self._check_usable()
        assert self._up is not None
        try:
            await asyncio.wait_for(self._up.wait(), timeout)
        except asyncio.TimeoutError:
            raise TransportError(
                f"{self.name}: no connection for {timeout} s (state {self.state}, last error "
                f"{self.last_error!r}); the broker is unreachable: check it is running"
            ) from None
        self._check_usable()
        assert self._conn is not None
        return self._conn

    def _check_usable(self) -> None:
        if self._closing or self.state == "closed":
            raise TransportClosedError(f"{self.name} is closed; create a new one")
        if self.state == "failed":
            raise SupervisorFailed(
                f"{self.name} stopped reconnecting after a fatal error: {self.last_error!r}; "
                "fix the cause (credentials, permissions, TLS) and create a new transport",
                self.last_error,
            )

    def connection_lost(self) -> None:
        """Tell the supervisor its connection is gone (when ``serve`` cannot notice by itself)."""
        if self.state == "connected" and self._up is not None:
            self._set_down()

    async def close(self) -> None:
        """Stop supervising (no reconnect after this). The connection is the caller's to close."""
        self._closing = True
        self.state = "closed"
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        if self._up is not None:
            self._up.set()  # wake waiters: they see the closed state
