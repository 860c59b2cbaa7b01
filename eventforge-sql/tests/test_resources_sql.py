"""Closing gives back everything opening took: threads, fds, sockets and the database's sessions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import sqlalchemy as sa
from eventforge import MessageQueue
from eventforge.message import Message
from eventforge.testing.resources import PROC_FD_AVAILABLE, settled_to, snapshot
from eventforge.testing.waiting import wait_until
from eventforge.workqueue import RetryPolicy, WorkQueue
from eventforge_sql.testing import PostgresServer
from eventforge_sql.transport import SqlTransport

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(not PROC_FD_AVAILABLE, reason="counts sockets through /proc/self/fd"),
]


def sessions(admin: sa.Engine) -> int:
    """Client sessions the server holds, not counting the one asking."""
    with admin.connect() as conn:
        query = (
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
        return int(conn.execute(sa.text(query)).scalar_one())


def use(transport: SqlTransport, name: str, i: int, pubsub: bool) -> None:
    """Everything that opens something: pub/sub (listener thread and connections), a work
    queue (its pool connection, a delayed ack's flusher thread)."""
    if pubsub:
        transport.subscribe(f"{name}.*", lambda m: None)
        transport.send(Message(f"{name}.new", i))
    queue = WorkQueue(f"{name}-tasks", transport=transport, retry=RetryPolicy(max_attempts=2))
    queue.put(i)
    delivery = queue.get(timeout=5)
    assert delivery is not None
    delivery.ack()
    queue.close()


def test_postgres_transports_opened_and_closed_in_a_loop_return_threads_fds_and_sessions(
    pg_server: PostgresServer, pg_engine: sa.Engine
) -> None:
    admin = sa.create_engine(pg_server.url, poolclass=sa.pool.NullPool)
    name = f"res{os.urandom(4).hex()}"
    SqlTransport.from_url(pg_server.url, create=False).close()  # warm: lazy imports
    pg_engine.dispose()  # the session's engine holds no idle connection during the count
    before = sessions(admin)
    baseline = snapshot()
    for i in range(25):
        with MessageQueue(SqlTransport.from_url(pg_server.url, create=False)) as queue:
            use(queue.transport, name, i, pubsub=True)  # type: ignore[arg-type]
    after = settled_to(baseline)
    assert not after.exceeds(baseline), f"before: {baseline}; after 25 closes: {after}"
    assert wait_until(lambda: sessions(admin) <= before), (
        f"PostgreSQL still holds {sessions(admin) - before} sessions of closed transports"
    )
    admin.dispose()


def test_close_releases_every_socket_and_thread_while_the_transport_is_still_referenced(
    pg_server: PostgresServer, pg_engine: sa.Engine, tmp_path: Path
) -> None:
    name = f"res{os.urandom(4).hex()}"
    urls = [(pg_server.url, True), (f"sqlite:///{tmp_path / 'q.sqlite'}", False)]
    for url, pubsub in urls:
        SqlTransport.from_url(url).close()
    baseline = snapshot()
    kept = []
    for i in range(10):
        for url, pubsub in urls:
            transport = SqlTransport.from_url(url, create=False)
            use(transport, name, i, pubsub)
            transport.close()
            kept.append(transport)  # still referenced: garbage collection cannot close anything
    after = settled_to(baseline)
    assert not after.exceeds(baseline), f"before: {baseline}; after 20 closes: {after}"
