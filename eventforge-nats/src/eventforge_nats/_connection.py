"""One nats-py connection on the shared background event loop.

nats-py is asyncio-only and a connection is bound to the loop it was opened on. The connection
lives on eventforge's shared background loop: synchronous callers block on it with
:meth:`NatsConnection.run`; coroutines on *that* loop await directly; coroutines on any other
loop await a wrapped future (:meth:`NatsConnection.call`), so they never block their loop.

The first connect is bounded (``connect_attempts`` tries per server; an authorization error,
a server certificate that does not verify, a client certificate the server refuses and a
server without TLS when TLS was asked for fail at once: retrying cannot cure them). After that
the client reconnects forever and every state change and asynchronous error (slow consumer,
stale connection, permission violation...) is counted in :meth:`NatsConnection.stats` and
logged, never swallowed.

When TLS is asked for, the connect (and any credentials) is never sent unencrypted, on the
first connect or a reconnect: see :func:`~eventforge_nats._tls.tls_enforcing_client`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from eventforge.errors import TransportClosedError
from eventforge.transport import BackgroundLoop, BoundLoop, Counter, background_loop

from ._confirm import PublishConfirmations
from ._credentials import check_credentials_file, require_nkeys
from ._errors import NatsAuthError, NatsConnectError, is_auth_error
from ._settings import NatsSettings
from ._tls import PlaintextRefusedError, tls_enforcing_client, tls_problem, transport_is_tls

if TYPE_CHECKING:
    from nats.aio.client import Client

__all__ = ["NatsConnection"]

log = logging.getLogger("eventforge.transports.nats")

T = TypeVar("T")


class _GiveUp(Exception):
    """Raised from the error callback to end the bounded first connect."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _every_so_often(count: int) -> bool:
    """Log the 1st, 10th, 100th and every 1000th occurrence of a repeated error."""
    return count in (1, 10, 100) or count % 1000 == 0


class NatsConnection:
    """A nats-py client, its callbacks and counters, on the shared background loop.

    ``host`` may instead be the application's own loop (a
    :class:`~eventforge.transport.BoundLoop`): coroutines on it then await nats-py directly.
    """

    def __init__(
        self, settings: NatsSettings, host: BackgroundLoop | BoundLoop | None = None
    ) -> None:
        self.settings = settings
        self.bg: BackgroundLoop | BoundLoop = host if host is not None else background_loop()
        self.loop = self.bg.loop
        self.nc: Client | None = None
        self.state = "new"
        self._connecting = False
        self._connect_errors: list[BaseException] = []
        self._listeners: list[Callable[[], Awaitable[None]]] = []
        self.reconnects = Counter()
        self.disconnects = Counter()
        self.async_errors = Counter()
        self.slow_consumer_errors = Counter()
        self.auth_errors = Counter()
        self.plaintext_refusals = Counter()
        self.last_error: str | None = None
        self.confirmations = PublishConfirmations(min(1.0, settings.ping_interval))
        self._closing: asyncio.Task[None] | None = None

    # -- running coroutines ----------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the connection's loop and block for its result (sync callers)."""
        return self.bg.run(coro, timeout)

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the connection's loop from any running loop."""
        if asyncio.get_running_loop() is self.loop:
            return await coro
        return await asyncio.wrap_future(self.bg.submit(coro))

    def on_reconnect(self, listener: Callable[[], Awaitable[None]]) -> None:
        """Call ``listener`` (a coroutine function) on the loop after every reconnect."""
        self._listeners.append(listener)

    def off_reconnect(self, listener: Callable[[], Awaitable[None]]) -> None:
        """Stop calling ``listener`` after reconnects (no error if it was not registered)."""
        try:
            self._listeners.remove(listener)
        except ValueError:
            pass

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def client(self) -> Client:
        """The connected nats-py client; raises if closed or never connected."""
        nc = self.nc
        if nc is None or self.state == "closed":
            raise TransportClosedError("the NATS connection is closed; create a new transport")
        return nc

    def _connect_limit(self) -> float:
        """Seconds the bounded first connect may take, every attempt to every server included."""
        settings = self.settings
        per_attempt = settings.connect_timeout + settings.reconnect_time_wait
        return settings.connect_attempts * len(settings.servers) * per_attempt + 5.0

    def connect(self) -> None:
        """Open the connection (blocking); raise :class:`NatsConnectError` when it fails."""
        self.run(self.connect_async(), timeout=self._connect_limit() + 5.0)

    async def connect_async(self) -> None:
        """Open the connection on the loop (idempotent)."""
        if self.nc is not None and self.state != "closed":
            return
        from nats.aio.client import Client

        if self.settings.credentials is not None:
            require_nkeys()
            check_credentials_file(self.settings.credentials)
        nc = tls_enforcing_client()() if self.settings.uses_tls else Client()
        self._connecting = True
        self._connect_errors = []
        self.state = "connecting"
        limit = self._connect_limit()
        try:
            await asyncio.wait_for(
                nc.connect(
                    error_cb=self._error_cb,
                    disconnected_cb=self._disconnected_cb,
                    reconnected_cb=self._reconnected_cb,
                    closed_cb=self._closed_cb,
                    **self.settings.connect_kwargs(),
                ),
                timeout=limit,
            )
        except BaseException as exc:
            self.state = "closed"
            await self._abandon(nc)
            raise self._connect_failure(exc) from None
        finally:
            self._connecting = False
        problem = self._plaintext_problem(nc)
        if problem is not None:
            self.state = "closed"
            await self._abandon(nc)
            raise NatsConnectError(problem)
        self.nc = nc
        self.state = "connected"
        self.confirmations.start(nc)

    def _plaintext_problem(self, nc: Client) -> str | None:
        """Say what is wrong when TLS was asked for and ``nc`` is connected without it.

        The client from :func:`tls_enforcing_client` refuses such a connection before sending
        anything; this check only fires if nats-py bypassed its hooks (a changed nats-py).
        """
        if not self.settings.uses_tls or transport_is_tls(nc._transport):
            return None
        return (
            f"the connection to NATS at {', '.join(self.settings.safe_servers())} is not "
            "encrypted although TLS was requested: this nats-py version bypassed the check that "
            "refuses plaintext, and the connect (with any credentials) may have been sent "
            "unencrypted; closing it. Use a nats-py 2.x version eventforge-nats supports (2.16 "
            "is tested)"
        )

    def _connect_failure(self, exc: BaseException) -> BaseException:
        if isinstance(exc, asyncio.CancelledError):
            return exc
        cause = exc.cause if isinstance(exc, _GiveUp) else exc
        if not self._connect_errors and not isinstance(exc, (_GiveUp, asyncio.TimeoutError)):
            self._connect_errors.append(exc)
        where = ", ".join(self.settings.safe_servers())
        for error in (*self._connect_errors, cause):
            if isinstance(error, PlaintextRefusedError):
                return NatsConnectError(f"{error}. Not retrying")
        if any(is_auth_error(e) for e in (*self._connect_errors, cause)):
            check = "check user/password, token or the credentials file"
            if self.settings.credentials is not None:
                check = (
                    f"check the credentials file {self.settings.credentials!r}: its user JWT "
                    "must be signed by an account the server trusts (operator and resolver "
                    "configuration) and its seed must be the user's"
                )
            return NatsAuthError(
                f"the NATS server at {where} refused the credentials (Authorization Violation); "
                f"{check}. Not retrying"
            )
        for error in (*self._connect_errors, cause):
            problem = tls_problem(error)
            if problem is not None:
                return NatsConnectError(
                    f"TLS handshake with the NATS server at {where} failed: {problem}. Not retrying"
                )
        last = self._connect_errors[-1] if self._connect_errors else cause
        reason = f"{type(last).__name__}: {last}" if str(last) else type(last).__name__
        advice = "check the URL and that nats-server is running"
        if self.settings.uses_tls:
            # With TLS 1.3 a server that refuses the client certificate may just close the
            # connection: the client then sees a reset, not the server's alert.
            advice += (
                " with TLS enabled; a server that requires a client certificate (mutual TLS) "
                "closes the connection like this when it gets none or one it does not trust: "
                "pass tls_cert= and tls_key= signed by a CA the server trusts"
            )
        return NatsConnectError(
            f"cannot connect to NATS at {where} after {max(1, len(self._connect_errors))} "
            f"attempt(s) ({reason}); {advice}"
        )

    async def _abandon(self, nc: Client) -> None:
        try:
            await asyncio.wait_for(nc.close(), 2.0)
        except Exception as exc:  # the client may be half-open; closing is best effort
            log.debug("closing a failed NATS connection raised %r", exc)

    async def close_async(self) -> None:
        """Flush what is buffered and close (idempotent)."""
        nc = self.nc
        if nc is None or self.state == "closed":
            self.state = "closed"
            return
        self.state = "closed"
        self.confirmations.stop()
        if nc.is_connected:
            try:
                await nc.flush(timeout=2)
            except Exception as exc:
                self.confirmations.link_died(nc, f"flush before close failed ({exc!r})")
        try:
            await nc.close()
        except Exception as exc:
            log.warning("closing the NATS connection raised %r", exc)

    # -- callbacks ---------------------------------------------------------------------------

    async def _error_cb(self, exc: Exception) -> None:
        import nats.errors

        if self._connecting:
            self._connect_errors.append(exc)
            attempts = self.settings.connect_attempts * len(self.settings.servers)
            if (
                is_auth_error(exc)
                or isinstance(exc, PlaintextRefusedError)
                or tls_problem(exc) is not None
                or len(self._connect_errors) >= attempts
            ):
                raise _GiveUp(exc)
            return
        self.async_errors.bump()
        self.last_error = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, nats.errors.SlowConsumerError):
            count = self.slow_consumer_errors.bump() + 1
            if _every_so_often(count):
                log.warning(
                    "NATS slow consumer on %r: messages dropped (%d so far)", exc.subject, count
                )
            return
        if isinstance(exc, PlaintextRefusedError):
            count = self.plaintext_refusals.bump() + 1
            if count <= 10 or count % 100 == 0:
                log.error(
                    "NATS reconnect abandoned (%d times), messages are not flowing: %s", count, exc
                )
            return
        if is_auth_error(exc):
            count = self.auth_errors.bump() + 1
            self.state = "auth_failed"
            if count > 10 and count % 100:
                return
            log.error(
                "NATS server refused the credentials while reconnecting (%d times); messages "
                "are not flowing: fix the credentials or the server's authorization",
                count,
            )
            return
        log.warning("NATS connection error: %s", self.last_error)

    async def _disconnected_cb(self) -> None:
        if self.state == "closed":
            return
        self.disconnects.bump()
        self.state = "reconnecting"
        if self.nc is not None:
            self.confirmations.link_died(self.nc, "connection lost")
        log.warning("disconnected from NATS; reconnecting")

    async def _reconnected_cb(self) -> None:
        nc = self.nc
        problem = None if nc is None else self._plaintext_problem(nc)
        if nc is not None and problem is not None:
            self.last_error = problem
            log.error("%s", problem)
            self.state = "closed"
            # closed from a task of its own: this callback runs inside nats-py's reconnect task,
            # which closing cancels
            self._closing = self.loop.create_task(nc.close())
            return
        self.reconnects.bump()
        self.state = "connected"
        log.info("reconnected to NATS")
        for listener in list(self._listeners):
            try:
                await listener()
            except Exception:
                log.exception("a NATS reconnect listener failed")

    async def _closed_cb(self) -> None:
        self.state = "closed"
        self.confirmations.stop()

    def stats(self) -> dict[str, Any]:
        """Connection state and counters."""
        nc = self.nc
        data: dict[str, Any] = {
            "state": self.state,
            "reconnects": self.reconnects.value,
            "disconnects": self.disconnects.value,
            "async_errors": self.async_errors.value,
            "slow_consumer_errors": self.slow_consumer_errors.value,
            "auth_errors": self.auth_errors.value,
            "publish_possibly_lost": self.confirmations.possibly_lost,
        }
        if nc is not None:
            data["pending_bytes"] = nc.pending_data_size
            url = nc.connected_url
            data["server"] = f"{url.hostname}:{url.port}" if url is not None else None
        data["last_error"] = self.last_error
        return data
