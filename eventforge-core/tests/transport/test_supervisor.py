"""The connection supervisor of the transport kit: first attempt loud, later losses ridden out."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from eventforge.errors import TransportClosedError
from eventforge.transport import Backoff, Supervisor, SupervisorFailed


class Server:
    """A stand-in link: each connection is a future that completes when the link drops."""

    def __init__(self) -> None:
        self.failures: list[BaseException] = []
        self.connects = 0
        self.restored: list[int] = []
        self.current: asyncio.Future[None] | None = None

    async def connect(self) -> int:
        if self.failures:
            raise self.failures.pop(0)
        self.connects += 1
        self.current = asyncio.get_running_loop().create_future()
        return self.connects

    async def serve(self, conn: int) -> None:
        assert self.current is not None
        await self.current

    async def restore(self, conn: int) -> None:
        self.restored.append(conn)

    def drop(self, exc: BaseException | None = None) -> None:
        assert self.current is not None
        if exc is None:
            self.current.set_result(None)
        else:
            self.current.set_exception(exc)


def make(server: Server, **kw: Any) -> Supervisor[int]:
    return Supervisor(
        "test",
        server.connect,
        server.serve,
        server.restore,
        alive=lambda conn: server.current is not None and not server.current.done(),
        backoff=Backoff(initial=0.001, cap=0.01, jitter=0),
        **kw,
    )


def test_first_connect_error_raises_unchanged_without_retry() -> None:
    async def main() -> None:
        server = Server()
        server.failures = [PermissionError("bad password"), OSError("never tried")]
        sup = make(server)
        with pytest.raises(PermissionError, match="bad password"):
            await sup.start()
        assert len(server.failures) == 1, "the first attempt must not be retried"
        assert sup.state == "failed"

    asyncio.run(main())


def test_lost_connection_is_reconnected_after_transient_failures_and_restored() -> None:
    async def main() -> None:
        server = Server()
        sup = make(server)
        assert await sup.start() == 1
        server.failures = [OSError("refused"), OSError("refused")]
        server.drop(ConnectionResetError("gone"))
        conn = await sup.connection(timeout=5)
        assert conn == 2
        assert server.restored == [2]
        stats = sup.stats()
        assert stats["reconnects"] == 1
        assert stats["disconnects"] == 1
        assert stats["failed_connect_attempts"] == 2
        assert stats["state"] == "connected"
        assert stats["last_recovery"] is not None
        await sup.close()

    asyncio.run(main())


def test_fatal_error_while_reconnecting_stops_and_is_reported() -> None:
    async def main() -> None:
        server = Server()
        sup = make(server, fatal=lambda exc: isinstance(exc, PermissionError))
        await sup.start()
        server.failures = [OSError("refused"), PermissionError("password changed")]
        server.drop()
        with pytest.raises(SupervisorFailed, match="password changed"):
            await sup.connection(timeout=5)
        assert sup.state == "failed"
        assert sup.failed_attempts.value == 2

    asyncio.run(main())


def test_connection_waits_only_up_to_its_timeout_while_down() -> None:
    async def main() -> None:
        server = Server()
        sup = make(server)
        await sup.start()
        server.failures = [OSError("down")] * 10_000
        server.drop()
        await asyncio.sleep(0)
        with pytest.raises(Exception, match=r"no connection for 0\.05 s"):
            await sup.connection(timeout=0.05)
        await sup.close()
        with pytest.raises(TransportClosedError):
            await sup.connection(timeout=1)

    asyncio.run(main())


def test_close_stops_reconnecting() -> None:
    async def main() -> None:
        server = Server()
        sup = make(server)
        await sup.start()
        await sup.close()
        server.drop()
        await asyncio.sleep(0.05)
        assert server.connects == 1
        assert sup.state == "closed"

    asyncio.run(main())


def test_cancelled_error_leaking_from_a_failed_connect_is_just_a_failed_attempt() -> None:
    """A client library may cancel its own tasks on a refused connect; supervision goes on."""

    async def main() -> None:
        server = Server()
        sup = make(server)
        await sup.start()
        server.failures = [asyncio.CancelledError(), OSError("refused")]
        server.drop()
        assert await sup.connection(timeout=5) == 2
        assert sup.failed_attempts.value == 2
        await sup.close()

    asyncio.run(main())
