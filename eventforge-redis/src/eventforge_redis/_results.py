"""Task results in Redis: one hash per task id, written by a Lua script, expired by Redis.

The key ``<key_prefix>:result:<task id>`` holds the record's bytes (``d``) and whether it is
final (``f``). The script checks and writes in one step on the server, so of two outcomes
written at once, one is kept; ``PEXPIRE`` makes Redis drop the key ``ttl`` after the last
write (millisecond precision, Redis's own expiry).
"""

from __future__ import annotations

from typing import Any

from eventforge.transport import ResultStore, StoredResult, check_result_ttl, check_task_id

from ._wq_scripts import Script

__all__ = ["RedisResultStore"]

_PUT = Script(
    r"""
-- ARGV: key, data, final (0|1), ttl in milliseconds
local key = ARGV[1]
if redis.call('HGET', key, 'f') == '1' then
  return 0  -- an outcome is kept until it expires
end
redis.call('HSET', key, 'd', ARGV[2], 'f', ARGV[3])
redis.call('PEXPIRE', key, ARGV[4])
return 1
"""
)


class RedisResultStore(ResultStore):
    """Results on the transport's Redis connection, shared by every client of the server."""

    name = "redis"

    def __init__(self, client: Any, key_prefix: str) -> None:
        self._client = client
        self._prefix = f"{key_prefix}:result:"

    def key(self, task_id: str) -> str:
        """The Redis key of ``task_id``'s record."""
        return self._prefix + task_id

    def put(self, task_id: str, data: bytes, *, ttl: float, final: bool) -> bool:
        key = self.key(check_task_id(task_id))
        ttl_ms = max(1, round(check_result_ttl(ttl) * 1000))
        return bool(_PUT(self._client, key, bytes(data), int(final), ttl_ms))

    def get(self, task_id: str) -> StoredResult | None:
        data, final = self._client.hmget(self.key(task_id), "d", "f")
        if data is None:
            return None
        return StoredResult(bytes(data), final == b"1")

    def delete(self, task_id: str) -> bool:
        return bool(self._client.delete(self.key(task_id)))

    def __repr__(self) -> str:
        return f"RedisResultStore({self._prefix!r})"
