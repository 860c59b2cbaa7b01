"""The result store of ``local://``: a ``results`` table in the directory's SQLite database."""

from __future__ import annotations

import time

from eventforge.transport import ResultStore, StoredResult, check_result_ttl, check_task_id
from eventforge.transports.local._store import Store

__all__ = ["LocalResultStore"]

# One statement: insert, or replace a record that is open or expired. SQLite serializes
# writers, so the check and the write are one step for every process using the directory.
_PUT = (
    "INSERT INTO results(key, data, final, until) VALUES (?, ?, ?, ?) "
    "ON CONFLICT(key) DO UPDATE SET data = excluded.data, final = excluded.final, "
    "until = excluded.until WHERE results.final = 0 OR results.until <= ?"
)


class LocalResultStore(ResultStore):
    """Results in the ``results`` table of a ``local://`` directory, shared by its processes.

    A record expires at ``until`` (the writer's wall clock plus its ttl): it reads as absent
    from then on, and the transport's sweep deletes it. A waiter reads the table every
    :attr:`poll_interval` at most.
    """

    name = "local"

    def __init__(self, store: Store, poll_interval: float = 0.05) -> None:
        self._store = store
        self.poll_interval = poll_interval

    def put(self, task_id: str, data: bytes, *, ttl: float, final: bool) -> bool:
        check_task_id(task_id)
        ttl = check_result_ttl(ttl)
        now = time.time()
        with self._store.write() as conn:
            cur = conn.execute(_PUT, (task_id, bytes(data), int(final), now + ttl, now))
            return cur.rowcount == 1

    def get(self, task_id: str) -> StoredResult | None:
        rows = self._store.read(
            "SELECT data, final FROM results WHERE key = ? AND until > ?", (task_id, time.time())
        )
        if not rows:
            return None
        return StoredResult(bytes(rows[0][0]), bool(rows[0][1]))

    def delete(self, task_id: str) -> bool:
        with self._store.write() as conn:
            live = conn.execute(
                "SELECT 1 FROM results WHERE key = ? AND until > ?", (task_id, time.time())
            ).fetchone()
            conn.execute("DELETE FROM results WHERE key = ?", (task_id,))
        return live is not None

    def __repr__(self) -> str:
        return f"LocalResultStore({str(self._store.directory)!r})"
