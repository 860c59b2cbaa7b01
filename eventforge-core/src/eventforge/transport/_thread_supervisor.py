"""A connection supervisor for synchronous clients: the same loop as :class:`Supervisor`, on a thread.

Clients with blocking sockets (redis-py, a plain ``socket``) keep each connection busy on a
thread of its own: a reader that blocks in ``recv``, a writer that blocks on its queue. For them
the loop of :class:`~eventforge.transport.Supervisor` (connect → serve → classify the error →
back off → reconnect → restore) runs on that thread instead of an event loop:
:class:`ThreadSupervisor` owns one daemon thread and calls the transport's plain functions
there.

* ``connect()`` returns a live connection (or raises);
* ``serve(conn)`` uses it until it is gone (returns or raises);
* ``restore(conn)`` sets up again what the connection carries (subscriptions, scripts);
* ``release(conn)`` closes a connection that ``serve`` or ``restore`` is done with;
* ``fatal(exc)`` tells an error retrying cannot fix (refused credentials) from a transient one;
* ``on_failed(exc)`` is told once when a fatal error ended the supervision;
* ``interrupt()`` wakes a ``serve`` that blocks, when :meth:`ThreadSupervisor.stop` is called.

Every wait between attempts follows the shared :class:`~eventforge._kit.Backoff` curve and ends
at once when the supervisor stops. Public as :class:`eventforge.transport.ThreadSupervisor`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from eventforge.transport._kit import Backoff
from eventforge.transport._supervision import ConnectionRecord

__all__ = ["ThreadSupervisor"]

log = logging.getLogger("eventforge.supervisor")

C = TypeVar("C")


def _nothing(*args: Any) -> None:
    return None


class ThreadSupervisor(ConnectionRecord, Generic[C]):
    """Keeps one connection alive on one thread: connect → serve → classify → back off → reconnect.

    :meth:`start` connects in the calling thread and raises the first error unchanged (a wrong
    address or refused credentials are reported at once, nothing is retried), then serves that
    connection on the supervisor's thread. :meth:`start_in_background` makes every attempt on
    the thread, the first ones included (for connections opened lazily, whose caller waits for
    something else, such as a subscription being confirmed).

    When ``serve`` ends, unless the supervisor is stopping, it counts a disconnect, waits along
    ``backoff`` and tries ``connect()`` + ``restore(conn)`` until both succeed. A fatal error
    (``fatal(exc)`` is true) from any step ends the thread: the state becomes ``"failed"`` and
    ``on_failed(exc)`` is called once, on the supervisor's thread.

    The state is ``"new"``, ``"connecting"``, ``"connected"``, ``"reconnecting"``, ``"failed"`` or
    ``"stopped"``; :meth:`stats` has the counters.
    """

    def __init__(
        self,
        name: str,
        connect: Callable[[], C],
        serve: Callable[[C], object],
        *,
        restore: Callable[[C], object] = _nothing,
        release: Callable[[C], object] = _nothing,
        fatal: Callable[[BaseException], bool] = lambda exc: False,
        on_failed: Callable[[BaseException], object] = _nothing,
        interrupt: Callable[[], object] = _nothing,
        backoff: Backoff | None = None,
    ) -> None:
        self.name = name
        self._connect = connect
        self._serve = serve
        self._restore = restore
        self._release = release
        self._fatal = fatal
        self._on_failed = on_failed
        self._interrupt = interrupt
        self.backoff = backoff or Backoff(initial=0.1, cap=5.0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: C | None = None
        ConnectionRecord.__init__(self)

    # -- control -----------------------------------------------------------------------------------

    def start(self) -> C:
        """Connect now in the calling thread (errors raise unchanged), then supervise on a thread."""
        self._check_new()
        self.state = "connecting"
        try:
            conn = self._connect()
        except BaseException as exc:
            self.state = "failed"
            self.last_error = exc
            raise
        self.connects.bump()
        self._up(conn)
        self._spawn(conn)
        return conn

    def start_in_background(self) -> None:
        """Make every attempt, the first one included, on the supervisor's thread."""
        self._check_new()
        self.state = "connecting"
        self._spawn(None)

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop supervising: no reconnect after this; ``interrupt()`` wakes a blocked ``serve``.

        Waits up to ``timeout`` seconds for the thread to end (not when called from the thread
        itself). Idempotent.
        """
        self._stop.set()
        if self.state != "failed":
            self.state = "stopped"
        try:
            self._interrupt()
        except Exception as exc:  # a connection already gone cannot be woken: nothing to do
            log.debug("%s: interrupting serve raised %r", self.name, exc)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def stopping(self) -> bool:
        """Whether :meth:`stop` was called: ``serve`` loops check it to return.

        A method, not a property, so that a type checker does not assume it unchanged between
        two checks in one loop."""
        return self._stop.is_set()

    def sleep(self, seconds: float) -> bool:
        """Wait ``seconds`` unless the supervisor stops first; return whether it is stopping."""
        return self._stop.wait(seconds)

    @property
    def current(self) -> C | None:
        """The live connection, or ``None`` while there is none."""
        return self._conn if self.state == "connected" else None

    @property
    def running(self) -> bool:
        """Whether the supervisor's thread is alive (it ends on stop or on a fatal error)."""
        return self._thread is not None and self._thread.is_alive()

    def in_thread(self) -> bool:
        """Tell whether the caller is the supervisor's thread."""
        return threading.current_thread() is self._thread

    # -- the loop ------------------------------------------------------------------------------------

    def _check_new(self) -> None:
        if self.state != "new":
            raise RuntimeError(f"{self.name}: a supervisor starts once (state {self.state})")

    def _spawn(self, conn: C | None) -> None:
        self._thread = threading.Thread(target=self._run, args=(conn,), name=self.name, daemon=True)
        self._thread.start()

    def _up(self, conn: C) -> None:
        self._conn = conn
        if not self._stop.is_set():
            self.state = "connected"

    def _run(self, conn: C | None) -> None:
        if conn is None:
            conn = self._reconnect(first=True)
        while conn is not None:
            try:
                self._serve(conn)
            except BaseException as exc:
                self.last_error = exc
                if not self._stop.is_set() and self._fatal(exc):
                    self._discard(conn)
                    self._fail(exc, "serve")
                    return
            self._discard(conn)
            if self._stop.is_set():
                return
            self.disconnects.bump()
            self.state = "reconnecting"
            self._went_down()
            log.warning(
                "%s: the connection was lost (%r); reconnecting", self.name, self.last_error
            )
            conn = self._reconnect(first=False)

    def _reconnect(self, *, first: bool) -> C | None:
        """Attempts until one connects and restores; ``None`` when stopped or failed."""
        attempt = 0
        while not self._stop.is_set():
            # The first attempt of a background start goes at once; every other one waits.
            if (attempt or not first) and self._stop.wait(self.backoff.delay(attempt + 1)):
                return None
            attempt += 1
            try:
                conn = self._connect()
            except BaseException as exc:
                if self._failed_attempt(exc, attempt, "connect"):
                    return None
                continue
            try:
                self._restore(conn)
            except BaseException as exc:
                self._discard(conn)
                if self._failed_attempt(exc, attempt, "restore"):
                    return None
                continue
            if self._stop.is_set():
                self._discard(conn)
                return None
            if first:
                self.connects.bump()
            else:
                self._came_back()
            self._up(conn)
            if not first:
                log.warning(
                    "%s: reconnected after %d attempt(s), %.2f s down",
                    self.name,
                    attempt,
                    self.last_recovery or 0.0,
                )
            return conn
        return None

    def _failed_attempt(self, exc: BaseException, attempt: int, step: str) -> bool:
        """Count a failed attempt; return True when the loop must end (fatal, or stopping)."""
        self.failed_attempts.bump()
        self.last_error = exc
        if self._stop.is_set():
            return True
        if self._fatal(exc):
            self._fail(exc, step)
            return True
        if attempt in (1, 10, 100) or attempt % 1000 == 0:
            log.warning("%s: %s attempt %d failed: %r", self.name, step, attempt, exc)
        return False

    def _fail(self, exc: BaseException, step: str) -> None:
        self.state = "failed"
        log.error("%s: %s failed with a fatal error, giving up: %r", self.name, step, exc)
        try:
            self._on_failed(exc)
        except Exception:
            log.exception("%s: on_failed raised", self.name)

    def _discard(self, conn: C) -> None:
        if self._conn is conn:
            self._conn = None
        try:
            self._release(conn)
        except Exception as exc:  # closing a broken connection may fail: it is gone either way
            log.debug("%s: releasing a connection raised %r", self.name, exc)
