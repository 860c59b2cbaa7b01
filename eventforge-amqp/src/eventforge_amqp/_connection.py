"""One aiormq connection on the shared background loop, kept alive by the core Supervisor.

The link owns the connection and its *channel slots*. A slot opens its channel on first use and
again whenever the channel was closed (by a protocol error such as an unknown delivery tag, or
by a reconnect); its ``on_open`` hooks then restore what lived on it (consumers). A channel
closed by the broker while the connection stays up is reopened at once, so the consumers on
the *other* channels never notice.

The first connect is one attempt: a refused password or an unreachable broker raises
:class:`AmqpAuthError` / :class:`AmqpConnectError` from the constructor. After that the
supervisor reconnects with the shared Backoff and restores every slot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import aiormq
import aiormq.exceptions
from eventforge.errors import TransportClosedError, TransportError
from eventforge.transport import BoundLoop, Counter, Supervisor, background_loop
from pamqp.commands import Connection as ConnectionFrames

from ._channel import FRAME_BUFFER, make_fast
from ._frames import FrameReader
from ._python import check_python
from ._settings import AmqpSettings

__all__ = ["AmqpAuthError", "AmqpConnectError", "ChannelSlot", "Link"]

log = logging.getLogger("eventforge.transports.amqp")

# The transport and the work queue both import this module: on Python 3.10 with an aiormq 6
# installed (another package's dependency) loading them fails with the reason. Without aiormq,
# importing them fails first on the missing module; the registry loads _entry, which checks first.
check_python()

T = TypeVar("T")
Hook = Callable[[aiormq.abc.AbstractChannel], Awaitable[None]]


class AmqpConnectError(TransportError, ConnectionError):
    """The first connection to the broker failed (unreachable, refused, TLS, timeout)."""


class AmqpAuthError(AmqpConnectError, PermissionError):
    """The broker refused the user name or password (or the vhost)."""


class _Connection(aiormq.Connection):
    """aiormq's connection, recording ``connection.blocked`` / ``unblocked`` for stats."""

    blocked_since: float | None = None
    blocked_reason: str | None = None
    blocked_total: float = 0.0
    blocked_count: int = 0

    stream_writer: asyncio.StreamWriter | None = None

    async def _Connection__writer(self, writer: asyncio.StreamWriter) -> None:  # noqa: N802
        """aiormq's writer; the stream is kept so that :func:`write_frames` can write to it
        while the write queue is empty."""
        self.stream_writer = writer
        await aiormq.Connection._Connection__writer(self, writer)  # type: ignore[attr-defined]

    async def _Connection__reader(self, frame_receiver: Any) -> None:  # noqa: N802
        """aiormq's reader, fed by a :class:`FrameReader` (whole reads, not 3 per frame)."""
        frames = FrameReader(frame_receiver.reader)
        await aiormq.Connection._Connection__reader(self, frames)  # type: ignore[attr-defined]

    async def _Connection__handle_connection_blocked(  # noqa: N802 (aiormq's private hook)
        self, frame: ConnectionFrames.Blocked
    ) -> None:
        if self.blocked_since is None:
            self.blocked_since = time.monotonic()
            self.blocked_count += 1
        self.blocked_reason = frame.reason
        log.warning("the broker blocked publishing on this connection: %s", frame.reason)
        await aiormq.Connection._Connection__handle_connection_blocked(self, frame)  # type: ignore[attr-defined]

    async def _Connection__handle_connection_unblocked(  # noqa: N802
        self, frame: ConnectionFrames.Unblocked
    ) -> None:
        if self.blocked_since is not None:
            self.blocked_total += time.monotonic() - self.blocked_since
            self.blocked_since = None
        log.warning("the broker unblocked publishing on this connection")
        await aiormq.Connection._Connection__handle_connection_unblocked(self, frame)  # type: ignore[attr-defined]


def _fatal(exc: BaseException) -> bool:
    """Errors no retry can cure: refused credentials, a missing vhost, TLS verification."""
    import ssl

    return isinstance(
        exc,
        (
            aiormq.exceptions.AuthenticationError,
            aiormq.exceptions.ProbableAuthenticationError,
            aiormq.exceptions.ConnectionNotAllowed,
            ssl.SSLCertVerificationError,
        ),
    )


class ChannelSlot:
    """One channel of the link, opened on demand and reopened after it closes."""

    def __init__(self, link: Link, name: str, *, confirms: bool, eager: bool = False) -> None:
        self.link = link
        self.name = name
        self.confirms = confirms
        self.eager = eager
        self.hooks: list[Hook] = []
        self.channel: aiormq.abc.AbstractChannel | None = None
        self._opening: asyncio.Future[aiormq.abc.AbstractChannel] | None = None
        self.reopens = Counter()
        self.closed_by_broker = Counter()
        self.generation = 0
        self.retired = False

    async def get(
        self, timeout: float | None = None, conn: _Connection | None = None
    ) -> aiormq.abc.AbstractChannel:
        """The open channel (opening it, and running the hooks, when needed).

        ``conn`` is the connection to open it on while it is being restored (before the
        supervisor reports it up); otherwise the link's live connection.
        """
        channel = self.channel
        if channel is not None and not channel.is_closed:
            return channel
        if self._opening is not None and not self._opening.done():
            return await asyncio.shield(self._opening)
        self._opening = self.link.loop.create_future()
        opening = self._opening
        try:
            channel = await self._open(timeout, conn)
        except BaseException as exc:
            opening.set_exception(exc)
            opening.exception()  # retrieved: the awaiting callers get it
            self._opening = None
            raise
        opening.set_result(channel)
        return channel

    async def _open(
        self, timeout: float | None, conn: _Connection | None
    ) -> aiormq.abc.AbstractChannel:
        generation = self.generation
        if conn is None:
            conn = await self.link.connection(timeout)
        if generation != self.generation:
            # A reconnect reset this slot while we waited; its restore opens the channel.
            return await self.get(timeout)
        channel = make_fast(
            await conn.channel(
                publisher_confirms=self.confirms,
                on_return_raises=False,
                frame_buffer_size=FRAME_BUFFER,
                timeout=timeout,
            )
        )
        if self.channel is not None:
            self.reopens.bump()
        self.channel = channel
        channel.closing.add_done_callback(lambda _: self._closed(channel))
        for hook in list(self.hooks):
            await hook(channel)
        return channel

    def _closed(self, channel: aiormq.abc.AbstractChannel) -> None:
        link = self.link
        if link.closing or self.retired or channel is not self.channel:
            return
        conn = link.supervisor.current
        if conn is None or conn.is_closed:
            return  # the whole connection went: the supervisor restores every slot
        self.closed_by_broker.bump()
        log.warning("AMQP channel %r was closed by the broker; reopening it", self.name)
        if self.eager:
            link.spawn(self._reopen())

    async def _reopen(self) -> None:
        try:
            await self.get(self.link.settings.options["connect_timeout"])
        except Exception as exc:
            log.error("reopening AMQP channel %r failed: %r", self.name, exc)

    def reset(self) -> None:
        """Forget the channel (its connection is gone)."""
        self.generation += 1
        self.channel = None
        self._opening = None


class Link:
    """The connection, its supervisor and its channel slots, on one event loop."""

    def __init__(self, settings: AmqpSettings, bound: BoundLoop | None = None) -> None:
        self.settings = settings
        self.bg = bound if bound is not None else background_loop()
        self.loop = self.bg.loop
        self.closing = False
        self.slots: list[ChannelSlot] = []
        self.supervisor: Supervisor[_Connection] = Supervisor(
            f"AMQP {settings.safe_url()}",
            self._connect,
            self._serve,
            self._restore,
            fatal=_fatal,
            alive=lambda conn: not conn.is_closed,
            backoff=settings.backoff,
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        self._blocked_total_closed = 0.0

    # -- running coroutines ----------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the link's loop and block for the result (not from the loop)."""
        return self.bg.run(coro, timeout)

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the link's loop from any loop."""
        if self.bg.in_loop_thread():
            return await coro
        return await asyncio.wrap_future(self.bg.submit(coro))

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` as a task on the link's loop (called on that loop)."""
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- connection ------------------------------------------------------------------------

    def slot(self, name: str, *, confirms: bool, eager: bool = False) -> ChannelSlot:
        slot = ChannelSlot(self, name, confirms=confirms, eager=eager)
        self.slots.append(slot)
        return slot

    def connect(self) -> None:
        self.run(self.connect_async())

    async def connect_async(self) -> None:
        try:
            conn = await self.supervisor.start()
        except BaseException as exc:
            raise self._connect_error(exc) from exc
        try:
            await self._restore(conn)
        except BaseException:
            await self.close_async()
            raise

    def _connect_error(self, exc: BaseException) -> BaseException:
        where = self.settings.safe_url()
        if isinstance(
            exc,
            (
                aiormq.exceptions.AuthenticationError,
                aiormq.exceptions.ProbableAuthenticationError,
            ),
        ):
            return AmqpAuthError(
                f"the broker at {where} refused user {self.settings.user!r} ({exc!r}); check the "
                "user name, the password and that the user may access the vhost. Nothing was "
                "retried"
            )
        if isinstance(exc, aiormq.exceptions.ConnectionNotAllowed):
            return AmqpAuthError(
                f"the broker at {where} does not allow user {self.settings.user!r} on vhost "
                f"{self.settings.vhost!r} ({exc!r}); grant access with rabbitmqctl "
                "set_permissions, or use another vhost"
            )
        if isinstance(exc, asyncio.TimeoutError):
            return AmqpConnectError(
                f"no AMQP connection to {where} within "
                f"{self.settings.options['connect_timeout']} s; check the address and that the "
                "broker runs"
            )
        return AmqpConnectError(
            f"cannot connect to the AMQP broker at {where}: {type(exc).__name__}: {exc}; check "
            "the address and that the broker runs"
        )

    async def _connect(self) -> _Connection:
        conn = _Connection(self.settings.client_url(), loop=self.loop)
        try:
            await asyncio.wait_for(conn.connect(), self.settings.options["connect_timeout"])
        except BaseException:
            await self._close_quietly(conn)
            raise
        return conn

    async def _serve(self, conn: _Connection) -> None:
        try:
            await conn.closing
        finally:
            if conn.blocked_since is not None:
                conn.blocked_total += time.monotonic() - conn.blocked_since
                conn.blocked_since = None
            self._blocked_total_closed += conn.blocked_total
            conn.blocked_total = 0.0
            for slot in self.slots:
                slot.reset()

    async def _restore(self, conn: _Connection) -> None:
        """Reopen the eager channels (their hooks declare and consume again), bounded in time."""
        for slot in self.slots:
            slot.reset()
        timeout = self.settings.options["connect_timeout"]
        try:
            await asyncio.wait_for(self._reopen_eager(conn, timeout), 3 * timeout)
        except BaseException:
            await self._close_quietly(conn)
            raise

    async def _reopen_eager(self, conn: _Connection, timeout: float) -> None:
        for slot in list(self.slots):
            if slot.eager:
                await slot.get(timeout, conn)

    async def connection(self, timeout: float | None) -> _Connection:
        """The live connection; waits up to ``timeout`` while reconnecting."""
        if self.closing:
            raise TransportClosedError("the AMQP transport is closed; create a new one")
        return await self.supervisor.connection(timeout)

    @property
    def blocked(self) -> _Connection | None:
        """The connection when the broker has blocked it, else ``None``."""
        conn = self.supervisor.current
        if conn is not None and conn.blocked_since is not None:
            return conn
        return None

    def blocked_error(self, publish_timeout: float) -> TransportError | None:
        """The error for a publish while the broker has blocked us longer than the timeout."""
        conn = self.blocked
        if conn is None or conn.blocked_since is None:
            return None
        waited = time.monotonic() - conn.blocked_since
        if waited < publish_timeout:
            return None
        return TransportError(
            f"the broker has blocked publishing for {waited:.1f} s ({conn.blocked_reason}); "
            "the message was not sent. The broker raised a resource alarm (memory or disk): "
            "free resources on the broker"
        )

    def timeout_reason(self, key: str, publish_timeout: float) -> str:
        """Why a confirmed publish to ``key`` timed out (blocked broker or no confirm)."""
        conn = self.blocked
        if conn is not None:
            return (
                f"publishing to {key!r} timed out after {publish_timeout} s: the broker "
                f"blocked this connection ({conn.blocked_reason}), a resource alarm (memory or "
                "disk); free resources on the broker"
            )
        return (
            f"publishing to {key!r} was not confirmed within {publish_timeout} s "
            f"(connection {self.supervisor.state}); it may or may not have been stored"
        )

    async def close_async(self) -> None:
        self.closing = True
        await self.supervisor.close()
        conn = self.supervisor._conn if self.supervisor.state != "new" else None
        for task in list(self._tasks):
            task.cancel()
        if conn is not None:
            await self._close_quietly(conn)

    @staticmethod
    async def _close_quietly(conn: _Connection) -> None:
        try:
            await asyncio.wait_for(conn.close(), 5)
        except BaseException as exc:
            log.debug("closing an AMQP connection: %r", exc)

    def stats(self) -> dict[str, Any]:
        data = self.supervisor.stats()
        conn = self.supervisor.current
        blocked = self._blocked_total_closed
        blocked_now = False
        count = 0
        if conn is not None:
            blocked += conn.blocked_total
            count = conn.blocked_count
            if conn.blocked_since is not None:
                blocked_now = True
                blocked += time.monotonic() - conn.blocked_since
        data.update(
            {
                "blocked": blocked_now,
                "blocked_time": round(blocked, 3),
                "blocked_count": count,
                "channel_reopens": sum(s.reopens.value for s in self.slots),
                "channels_closed_by_broker": sum(s.closed_by_broker.value for s in self.slots),
            }
        )
        return data
