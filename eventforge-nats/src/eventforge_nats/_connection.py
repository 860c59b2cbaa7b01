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
first connect or a reconnect: see :func:`tls_enforcing_client`.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.metadata
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from eventforge.errors import TransportClosedError, TransportError
from eventforge.transport import LoopHost, background_loop

from ._confirm import PublishConfirmations
from ._credentials import check_credentials_file, require_nkeys
from ._settings import NatsSettings

if TYPE_CHECKING:
    from nats.aio.client import Client

__all__ = ["NatsAuthError", "NatsConnectError", "NatsConnection"]

log = logging.getLogger("eventforge.transports.nats")

T = TypeVar("T")


class NatsConnectError(TransportError, ConnectionError):
    """The first connection to NATS failed (unreachable, refused, TLS, timeout)."""


class NatsAuthError(NatsConnectError, PermissionError):
    """The NATS server refused the credentials ("Authorization Violation")."""


class _GiveUp(Exception):
    """Raised from the error callback to end the bounded first connect."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class PlaintextRefusedError(Exception):
    """TLS was asked for but the connection to a server would not be encrypted.

    Raised by the client from :func:`tls_enforcing_client` before the connect (which carries
    any user, password, token or JWT) is written; the class nats-py sees also derives from
    ``nats.errors.Error``, so its connect and reconnect loops treat it as a failed attempt.
    """


def is_auth_error(exc: BaseException) -> bool:
    """Tell whether a nats-py error means the credentials were refused."""
    import nats.errors

    if isinstance(exc, nats.errors.AuthorizationError):
        return True
    text = str(exc).lower()
    return "authorization violation" in text or "authentication" in text


_CLIENT_CERT_REFUSED = (
    "BAD_CERTIFICATE",
    "UNKNOWN_CA",
    "CERTIFICATE_UNKNOWN",
    "UNSUPPORTED_CERTIFICATE",
    "CERTIFICATE_EXPIRED",
    "CERTIFICATE_REVOKED",
)


def tls_problem(exc: BaseException) -> str | None:
    """Say what to fix when ``exc`` is a TLS failure that retrying cannot cure; else None."""
    import ssl

    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"the server's certificate did not verify ({exc.verify_message}); pass tls_ca= the "
            "CA file that signed it (or tls= an ssl.SSLContext that trusts it) and connect by a "
            "host name or IP address the certificate names (or set tls_hostname=)"
        )
    if not isinstance(exc, ssl.SSLError):
        return None
    reason = str(exc.reason or "").upper()
    if "CERTIFICATE_REQUIRED" in reason:
        return (
            "the server requires a client certificate (mutual TLS); pass tls_cert= and tls_key= "
            "(or tls= an ssl.SSLContext with load_cert_chain)"
        )
    if any(alert in reason for alert in _CLIENT_CERT_REFUSED):
        return (
            f"the server refused the client certificate ({exc.reason}); use a tls_cert signed by "
            "a CA the server trusts (its ca_file), not expired"
        )
    return None


def transport_is_tls(transport: object) -> bool | None:
    """Tell whether nats-py's transport is encrypted; None when it cannot be told."""
    writer = getattr(transport, "_io_writer", None)
    get_extra_info = getattr(writer, "get_extra_info", None)
    if not callable(get_extra_info):
        return None
    return get_extra_info("ssl_object") is not None


# The nats-py methods the TLS guard overrides (nats-py 2.x): INFO is handed to _process_info
# before the client decides to upgrade; _connect_command builds the CONNECT just before it is
# written.
_TLS_HOOKS = ("_process_connect_init", "_process_info", "_connect_command")


def tls_hooks_missing(client: type[Any]) -> list[str]:
    """The parts of nats-py's ``Client`` the TLS guard relies on that ``client`` lacks.

    Besides the methods existing, the guard awaits ``_process_info(info, initial_connection)``
    from its own coroutine override: nats-py made that method a coroutine in 2.10, and before
    that an override awaiting it fails every TLS connect.
    """
    missing = [name for name in _TLS_HOOKS if not callable(getattr(client, name, None))]
    if missing:
        return missing
    process_info = client._process_info
    if "initial_connection" not in inspect.signature(process_info).parameters:
        missing.append("_process_info(initial_connection=)")
    if not inspect.iscoroutinefunction(process_info):
        missing.append("_process_info as a coroutine (nats-py >= 2.10)")
    if inspect.iscoroutinefunction(client._connect_command):
        missing.append("_connect_command as a plain method")
    return missing


@functools.cache
def tls_enforcing_client() -> type[Client]:
    """A nats-py ``Client`` that never sends its connect unencrypted (for TLS settings).

    nats-py upgrades to TLS only when the server's INFO says ``tls_required``: against a
    server without TLS, a ``tls://`` URL would send the connect, credentials included, in
    plaintext. This client, on every connect and reconnect:

    * upgrades when the INFO says ``tls_available`` (TLS offered but not required), as the
      Go client does;
    * refuses (:class:`PlaintextRefusedError`, before writing anything) when the INFO offers
      no TLS at all;
    * checks, when building the connect, that the socket really is TLS, and refuses if it is
      not or cannot be told, so a nats-py that stops calling the INFO hook fails closed.

    Raises :class:`NatsConnectError` when the installed nats-py lacks the methods overridden
    here, instead of falling back to plaintext.
    """
    import nats.errors
    from nats.aio.client import Client

    missing = tls_hooks_missing(Client)
    if missing:
        try:
            version = importlib.metadata.version("nats-py")
        except importlib.metadata.PackageNotFoundError:
            version = "(unknown version)"
        raise NatsConnectError(
            f"nats-py {version} has no Client.{', Client.'.join(missing)}, which eventforge-nats "
            "uses to make sure the connect (and any credentials) is never sent unencrypted when "
            "TLS is requested; not connecting. Install nats-py>=2.10 (pip install -U nats-py)"
        )

    class Refused(nats.errors.Error, PlaintextRefusedError):
        pass

    def refuse(client: Client, what: str) -> Refused:
        server = client._current_server
        url = "the NATS server"
        if server is not None:
            scheme = server.uri.scheme or "nats"
            url = f"{scheme}://{server.uri.hostname}:{server.uri.port}"
        return Refused(
            f"{url} {what} but TLS was requested (a tls:// URL or the tls, tls_ca or tls_cert "
            "options); refusing to send the connect and any credentials in plaintext. Enable "
            "TLS on the server (tls { ... } in its configuration), or connect with a nats:// "
            "URL and no TLS options if plaintext is acceptable"
        )

    class TlsEnforcingClient(Client):
        async def _process_info(
            self, info: dict[str, Any], initial_connection: bool = False
        ) -> None:
            if initial_connection and not info.get("tls_required"):
                if not info.get("tls_available"):
                    raise refuse(self, "does not offer TLS")
                info["tls_required"] = True  # offered, not required: upgrade all the same
            await super()._process_info(info, initial_connection)

        def _connect_command(self) -> bytes:
            secure = transport_is_tls(self._transport)
            if secure is None:
                raise refuse(self, "is connected by a transport that cannot tell if it is TLS")
            if not secure:
                raise refuse(self, "was not upgraded to TLS")
            return super()._connect_command()

    return TlsEnforcingClient


class NatsConnection:
    """A nats-py client, its callbacks and counters, on the shared background loop.

    ``host`` may instead be the application's own loop (:class:`~eventforge.transport._loop.BoundLoop`):
    coroutines on it then await nats-py directly.
    """

    def __init__(self, settings: NatsSettings, host: LoopHost | None = None) -> None:
        self.settings = settings
        self.bg: LoopHost = host if host is not None else background_loop()
        self.loop = self.bg.loop
        self.nc: Client | None = None
        self.state = "new"
        self._connecting = False
        self._connect_errors: list[BaseException] = []
        self._listeners: list[Callable[[], Awaitable[None]]] = []
        self.counters: dict[str, int] = {
            "reconnects": 0,
            "disconnects": 0,
            "async_errors": 0,
            "slow_consumer_errors": 0,
            "auth_errors": 0,
        }
        self.last_error: str | None = None
        self.confirmations = PublishConfirmations(min(1.0, settings.ping_interval))
        self._closing: asyncio.Task[None] | None = None
        self._plaintext_refusals = 0

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

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def client(self) -> Client:
        """The connected nats-py client; raises if closed or never connected."""
        nc = self.nc
        if nc is None or self.state == "closed":
            raise TransportClosedError("the NATS connection is closed; create a new transport")
        return nc

    def connect(self) -> None:
        """Open the connection (blocking); raise :class:`NatsConnectError` when it fails."""
        deadline = (
            self.settings.connect_attempts
            * len(self.settings.servers)
            * (self.settings.connect_timeout + self.settings.reconnect_time_wait)
            + 5.0
        )
        self.run(self.connect_async(), timeout=deadline + 5.0)

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
        limit = (
            self.settings.connect_attempts
            * len(self.settings.servers)
            * (self.settings.connect_timeout + self.settings.reconnect_time_wait)
            + 5.0
        )
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
        self.counters["async_errors"] += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, nats.errors.SlowConsumerError):
            self.counters["slow_consumer_errors"] += 1
            if self.counters["slow_consumer_errors"] in (1, 10, 100) or (
                self.counters["slow_consumer_errors"] % 1000 == 0
            ):
                log.warning(
                    "NATS slow consumer on %r: messages dropped (%d so far)",
                    exc.subject,
                    self.counters["slow_consumer_errors"],
                )
            return
        if isinstance(exc, PlaintextRefusedError):
            self._plaintext_refusals += 1
            count = self._plaintext_refusals
            if count <= 10 or count % 100 == 0:
                log.error(
                    "NATS reconnect abandoned (%d times), messages are not flowing: %s", count, exc
                )
            return
        if is_auth_error(exc):
            self.counters["auth_errors"] += 1
            self.state = "auth_failed"
            count = self.counters["auth_errors"]
            if count > 10 and count % 100:
                return
            log.error(
                "NATS server refused the credentials while reconnecting (%d times); messages "
                "are not flowing: fix the credentials or the server's authorization",
                self.counters["auth_errors"],
            )
            return
        log.warning("NATS connection error: %s", self.last_error)

    async def _disconnected_cb(self) -> None:
        if self.state == "closed":
            return
        self.counters["disconnects"] += 1
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
        self.counters["reconnects"] += 1
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
        data: dict[str, Any] = {"state": self.state, **self.counters}
        data["publish_possibly_lost"] = self.confirmations.possibly_lost
        if nc is not None:
            data["pending_bytes"] = nc.pending_data_size
            url = nc.connected_url
            data["server"] = f"{url.hostname}:{url.port}" if url is not None else None
        data["last_error"] = self.last_error
        return data
