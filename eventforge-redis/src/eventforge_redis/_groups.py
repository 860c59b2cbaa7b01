"""Competing consumers over Redis Streams consumer groups.

``subscribe(pattern, callback, group=name)`` joins the consumer group ``name`` on the stream
``<prefix>:group:<name>:<pattern>`` and registers that stream in the group registry (see
:mod:`eventforge_redis._routing`), so every publish whose topic matches is appended to it once.
All members of the group, in any process on any machine, read the stream with
``XREADGROUP``: each entry goes to exactly one of them. An entry is acknowledged and deleted
after the callback returned; the entries of a member that died are taken over by another
member with ``XAUTOCLAIM`` once they have been idle for ``claim_idle`` seconds. So delivery to a
group is at-least-once.

Reads block for ``block`` seconds on a connection whose socket timeout is larger, so a blocked
read never fails spuriously and a dead server is noticed. When the stream or group vanished
(a server restarted without persistence) the consumer recreates both, registers again and
counts it in ``groups_recreated``: the loss is reported, never silent. Any other read error
ends the reader's round: a :class:`~eventforge.transport.ThreadSupervisor` backs off along the
transport's curve and connects the reader again (refused credentials stop it for good).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from eventforge.errors import ProtocolError
from eventforge.message import Message
from eventforge.transport import Backoff, Counter, SubscriptionStatus, ThreadSupervisor
from eventforge.wire import WireCodec

from ._connect import RedisSettings, describe_error, is_fatal
from ._routing import group_registry_entry, group_stream_key

__all__ = ["GroupConsumer", "consumer_name", "prune_consumers"]

log = logging.getLogger("eventforge.transports.redis")

_BATCH = 100


def consumer_name() -> str:
    """A consumer name unique to this process (its entries are reclaimed if it dies)."""
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"


def prune_consumers(client: Any, stream: str, group: str, keep: str, claim_idle_ms: int) -> None:
    """Forget consumers that died long ago and hold nothing (idle over ten ``claim_idle``).

    Consumer names are per process, so every restart leaves one behind; without pruning an
    abandoned group would never look empty.
    """
    for info in client.xinfo_consumers(stream, group):
        name = info.get("name")
        name = name.decode() if isinstance(name, bytes) else name
        if (
            name != keep
            and int(info.get("pending", 0)) == 0
            and int(info.get("idle", 0)) > 10 * claim_idle_ms
        ):
            client.xgroup_delconsumer(stream, group, name)
            log.info("removed consumer %r of group %r: idle and holding nothing", name, group)


class GroupConsumer:
    """One process's membership in one ``(pattern, group)``, with one reader thread."""

    def __init__(
        self,
        settings: RedisSettings,
        client: Any,
        codec: WireCodec,
        *,
        prefix: str,
        pattern: str,
        group: str,
        block: float,
        claim_idle: float,
        backoff: Backoff,
        on_callback_error: Callable[[Message, BaseException], None],
    ) -> None:
        self.pattern = pattern
        self.group = group
        self.stream = group_stream_key(prefix, group, pattern)
        self._registry = group_registry_entry(prefix, pattern, self.stream)
        self._settings = settings
        self._client = client
        self._codec = codec
        self._block_ms = max(1, int(block * 1000))
        self._claim_idle_ms = max(1, int(claim_idle * 1000))
        self._on_callback_error = on_callback_error
        self._members: list[tuple[str, Callable[[Message], None]]] = []
        self._turn = 0
        self._lock = threading.Lock()
        self.consumer = consumer_name()
        self._reader = settings.client(
            socket_timeout=block + settings.socket_timeout, max_connections=1
        )
        self._reader_id: int | None = None
        self.counters = {
            "group_delivered": Counter(),
            "group_redelivered": Counter(),
            "group_malformed": Counter(),
            "groups_recreated": Counter(),
            "group_read_errors": Counter(),
        }
        self._supervisor: ThreadSupervisor[int] = ThreadSupervisor(
            f"eventforge-redis-group-{group}",
            self._connect,
            self._serve,
            fatal=is_fatal,
            interrupt=self._unblock,
            backoff=backoff,
        )
        try:
            self._ensure_group()
            # The reader connects here: a server or an ACL that refuses it raises from subscribe.
            self._supervisor.start()
        except BaseException:
            self._reader.close()
            self._leave()
            raise

    # -- membership ----------------------------------------------------------------------------

    def add(self, sub_id: str, callback: Callable[[Message], None]) -> None:
        with self._lock:
            self._members = [*self._members, (sub_id, callback)]

    def remove(self, sub_id: str) -> bool:
        with self._lock:
            before = len(self._members)
            self._members = [m for m in self._members if m[0] != sub_id]
            return len(self._members) != before

    def __len__(self) -> int:
        return len(self._members)

    def status(self) -> SubscriptionStatus:
        """Ask Redis whether the group and its routing entry still exist; ``backlog`` is the
        stream's length (entries not yet acknowledged), ``lost`` how often the group was
        found gone and recreated."""
        lost = self.counters["groups_recreated"].value
        if self._supervisor.state == "failed":
            return SubscriptionStatus(
                False,
                f"the reader of group {self.group!r} stopped for good: "
                f"{self._supervisor.last_error}",
                lost,
            )
        key, member = self._registry
        with self._client.pipeline(transaction=False) as pipe:
            pipe.sismember(key, member)
            pipe.xinfo_groups(self.stream)
            pipe.xlen(self.stream)
            routed, groups, length = pipe.execute(raise_on_error=False)
        if isinstance(groups, Exception):
            groups = []  # no such key: the stream is gone with its groups
        names = {g.get("name") for g in groups}
        if self.group not in names and self.group.encode() not in names:
            return SubscriptionStatus(
                False,
                f"consumer group {self.group!r} of stream {self.stream!r} is gone from Redis "
                "(XGROUP DESTROY, the key deleted, or a restart without persistence): "
                "nothing routed to it is delivered",
                lost,
            )
        if isinstance(routed, Exception) or not routed:
            return SubscriptionStatus(
                False,
                f"stream {self.stream!r} of group {self.group!r} is no longer registered "
                f"under {key!r}: publishes on {self.pattern!r} do not reach it",
                lost,
            )
        return SubscriptionStatus(
            True, lost=lost, backlog=None if isinstance(length, Exception) else int(length)
        )

    def stop(self, *, leave: bool = True) -> None:
        """Stop reading; with ``leave``, drop this consumer and clean up an empty group."""
        self._supervisor.stop(self._block_ms / 1000 + self._settings.socket_timeout + 1)
        self._reader.close()
        if leave:
            self._leave()

    # -- Redis side ---------------------------------------------------------------------------------

    def _ensure_group(self) -> None:
        key, member = self._registry
        try:
            try:
                self._client.xgroup_create(self.stream, self.group, id="$", mkstream=True)
            except Exception as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            # Register after the group exists, so nothing routed to it is skipped by '$'.
            self._client.sadd(key, member)
        except Exception as exc:
            raise describe_error(exc, self._settings, f"joining group {self.group!r}") from exc

    def _leave(self) -> None:
        key, member = self._registry
        try:
            self._client.xgroup_delconsumer(self.stream, self.group, self.consumer)
            consumers = self._client.xinfo_consumers(self.stream, self.group)
            if not consumers:
                pipe = self._client.pipeline(transaction=True)
                pipe.srem(key, member)
                pipe.delete(self.stream)
                pipe.execute()
        except Exception as exc:
            log.debug("leaving group %r: %s", self.group, exc)

    def _unblock(self) -> None:
        """Wake the reader from its blocking read (on stop)."""
        if self._reader_id is not None:
            self._client.execute_command("CLIENT", "UNBLOCK", self._reader_id)

    def _connect(self) -> int:
        """Connect the reader (its first command does); its client id lets stop() unblock it."""
        try:
            self._reader_id = int(self._reader.client_id())
        except Exception as exc:
            self.counters["group_read_errors"].bump()
            raise describe_error(exc, self._settings, f"reading group {self.group!r}") from exc
        return self._reader_id

    def _serve(self, reader_id: int) -> None:
        """Read, hand out and acknowledge until stopped; raise when a read failed."""
        last_claim = 0.0
        supervisor = self._supervisor
        while not supervisor.stopping():
            try:
                now = time.monotonic()
                if now - last_claim >= self._claim_idle_ms / 2000:
                    last_claim = now
                    self._claim()
                reply = self._reader.xreadgroup(
                    self.group,
                    self.consumer,
                    {self.stream: ">"},
                    count=_BATCH,
                    block=self._block_ms,
                )
                for _stream, entries in reply or ():
                    self._process(entries, redelivered=False)
            except Exception as exc:
                if supervisor.stopping():
                    return
                if "NOGROUP" in str(exc):
                    self.counters["groups_recreated"].bump()
                    log.warning(
                        "stream %r or its group %r vanished (was Redis restarted without "
                        "persistence?); messages routed to it were lost. Recreating it",
                        self.stream,
                        self.group,
                    )
                    try:
                        self._ensure_group()
                    except Exception as again:
                        log.warning("recreating group %r failed: %s", self.group, again)
                    continue
                self._reader_id = None
                self.counters["group_read_errors"].bump()
                raise describe_error(exc, self._settings, f"reading group {self.group!r}") from exc

    def _claim(self) -> None:
        start = "0-0"
        while not self._supervisor.stopping():
            result: Any = self._reader.xautoclaim(
                self.stream, self.group, self.consumer, self._claim_idle_ms, start, count=_BATCH
            )
            start, entries = result[0], result[1]
            if entries:
                self._process(entries, redelivered=True)
            if start in (b"0-0", "0-0") or not entries:
                break
        self._prune()

    def _prune(self) -> None:
        prune_consumers(self._reader, self.stream, self.group, self.consumer, self._claim_idle_ms)

    def _process(self, entries: list[Any], *, redelivered: bool) -> None:
        done: list[Any] = []
        for entry_id, fields in entries:
            if fields is None:  # deleted while pending
                done.append(entry_id)
                continue
            data = fields.get(b"data")
            try:
                if data is None:
                    raise ProtocolError("stream entry has no 'data' field")
                message = self._codec.decode(data)
            except ProtocolError as exc:
                self.counters["group_malformed"].bump()
                log.warning("dropped malformed entry %s of %r: %s", entry_id, self.stream, exc)
                self._client.xadd(f"{self.stream}:dead", {**fields, b"reason": str(exc)})
                done.append(entry_id)
                continue
            callback = self._pick()
            if callback is not None:
                try:
                    callback(message)
                except Exception as exc:
                    self._on_callback_error(message, exc)
                self.counters["group_redelivered" if redelivered else "group_delivered"].bump()
            done.append(entry_id)
        if done:
            pipe = self._client.pipeline(transaction=False)
            pipe.xack(self.stream, self.group, *done)
            pipe.xdel(self.stream, *done)
            pipe.execute()

    def _pick(self) -> Callable[[Message], None] | None:
        members = self._members
        if not members:
            return None
        self._turn = (self._turn + 1) % len(members)
        return members[self._turn][1]
