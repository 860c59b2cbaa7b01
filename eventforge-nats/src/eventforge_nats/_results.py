"""Task results in a NATS KV bucket, ``EF_RESULTS``, each record with a per-message TTL.

The bucket (a JetStream stream ``KV_EF_RESULTS`` keeping one message per key, file storage,
per-message TTLs allowed) is made on first use. A record is the message on
``$KV.EF_RESULTS.<task id>``: one byte for final (``F``) or open (``O``), then the record's
bytes. A write reads the key's last message and publishes with
``Nats-Expected-Last-Subject-Sequence`` set to it, so the server refuses the write when another
came in between (it is then read and tried again): a final record is never replaced. Its
``Nats-TTL`` header (whole seconds, at least 1, rounded up; nats-server >= 2.11) makes the server
drop the record when it passes.
"""

from __future__ import annotations

import math
from typing import Any

from eventforge.errors import ConfigurationError
from eventforge.transport import ResultStore, StoredResult, check_result_ttl, check_task_id

from ._connection import NatsConnection

__all__ = ["RESULT_BUCKET", "NatsResultStore"]

RESULT_BUCKET = "EF_RESULTS"
_STREAM = f"KV_{RESULT_BUCKET}"
_SUBJECT = f"$KV.{RESULT_BUCKET}."
_FINAL, _OPEN = b"F", b"O"
_DELETED = ("DEL", "PURGE")
_WRONG_LAST = (10071, 10164)  # JSStreamWrongLastSequence: another write came first
_TTL_DISABLED = 10166  # JSMessageTTLDisabledErr: the stream does not allow per-message TTLs
_TIMEOUT = 30.0


def _ttl_disabled() -> ConfigurationError:
    return ConfigurationError(
        f"the KV bucket {RESULT_BUCKET!r} does not allow per-message TTLs (it was made by "
        "another tool, or on nats-server older than 2.11): delete it (nats kv del "
        f"{RESULT_BUCKET}) so that eventforge makes it again, on nats-server 2.11 or later",
        key="results",
    )


class NatsResultStore(ResultStore):
    """Results in the KV bucket ``EF_RESULTS`` of the transport's JetStream."""

    name = "nats"

    def __init__(self, conn: NatsConnection) -> None:
        self._conn = conn
        self._ready = False

    async def _js(self) -> Any:
        import nats.js.errors
        from nats.js.api import KeyValueConfig, StorageType

        js = self._conn.client.jetstream()
        if not self._ready:
            try:
                info = await js.stream_info(_STREAM)
            except nats.js.errors.NotFoundError:
                config = KeyValueConfig(bucket=RESULT_BUCKET, history=1, storage=StorageType.FILE)
                await js.create_key_value(config)
            else:
                if not info.config.allow_msg_ttl:
                    raise _ttl_disabled()
            self._ready = True
        return js

    async def _last(self, js: Any, subject: str) -> Any:
        """The key's last message, or ``None``."""
        import nats.js.errors

        try:
            return await js.get_msg(_STREAM, subject=subject)
        except nats.js.errors.NotFoundError:
            return None

    async def _put(self, subject: str, value: bytes, ttl: int) -> bool:
        import nats.js.errors

        js = await self._js()
        while True:
            last = await self._last(js, subject)
            seq = 0
            if last is not None:
                seq = last.seq
                deleted = (last.headers or {}).get("KV-Operation") in _DELETED
                if not deleted and (last.data or b"")[:1] == _FINAL:
                    return False
            headers = {"Nats-Expected-Last-Subject-Sequence": str(seq), "Nats-TTL": str(ttl)}
            try:
                await js.publish(subject, value, headers=headers)
            except nats.js.errors.APIError as exc:
                if exc.err_code in _WRONG_LAST:
                    continue  # another write came in between: read it and decide again
                if exc.err_code == _TTL_DISABLED:
                    raise _ttl_disabled() from exc
                raise
            return True

    def put(self, task_id: str, data: bytes, *, ttl: float, final: bool) -> bool:
        subject = _SUBJECT + check_task_id(task_id)
        seconds = max(1, math.ceil(check_result_ttl(ttl)))
        value = (_FINAL if final else _OPEN) + bytes(data)
        return self._conn.run(self._put(subject, value, seconds), timeout=_TIMEOUT)

    async def _get(self, subject: str) -> StoredResult | None:
        last = await self._last(await self._js(), subject)
        if last is None or (last.headers or {}).get("KV-Operation") in _DELETED:
            return None
        value = last.data or b""
        return StoredResult(value[1:], value[:1] == _FINAL)

    def get(self, task_id: str) -> StoredResult | None:
        return self._conn.run(self._get(_SUBJECT + task_id), timeout=_TIMEOUT)

    async def _delete(self, subject: str) -> bool:
        js = await self._js()
        present = await self._get(subject) is not None
        await js.purge_stream(_STREAM, subject=subject)
        return present

    def delete(self, task_id: str) -> bool:
        return self._conn.run(self._delete(_SUBJECT + task_id), timeout=_TIMEOUT)

    def __repr__(self) -> str:
        return f"NatsResultStore({RESULT_BUCKET!r})"
