"""A writer batch is routed by one route-script call: per-message results inside it.

Each test queues its messages while the private redis-server is paused (SIGSTOP), behind one
lead message the writer already has on the wire, so everything queued meanwhile is taken by
the writer as one batch once the server resumes (at most 1000 messages, at most 1 MiB of
envelopes per script call). ``INFO commandstats`` shows how many script calls that took.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import pytest
from eventforge.message import Message
from eventforge.testing import wait_until
from eventforge.testing.brokers import RedisServer

pytestmark = pytest.mark.broker


def _root() -> str:
    return f"batch{os.urandom(4).hex()}"


def _evalsha_calls(admin: Any) -> int:
    return int(admin.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))


def _queue_as_one_batch(
    server: RedisServer, transport: Any, lead_topic: str, queue: Callable[[], int]
) -> None:
    """Pause the server, let the writer put one message on the wire, run ``queue`` (which
    returns how many publishes it queued), wait until they are all queued, resume."""
    from eventforge.message import Message

    server.pause()
    try:
        transport.send(Message(lead_topic, "lead"))
        assert wait_until(lambda: transport.stats()["publish_backlog"] == 0)
        queued = queue()
        assert wait_until(lambda: transport.stats()["publish_backlog"] == queued)
    finally:
        server.resume()


def test_a_message_refused_by_acl_fails_alone_in_its_batch(
    redis_server_factory: Callable[..., RedisServer],
    limited_user: Callable[[RedisServer], str],
) -> None:
    """One message on a channel the ACL user may not publish to, in the middle of a batch of
    200: it is counted and raised once by flush; the other 199 are delivered, in order, the
    100 before it by the same script call."""
    import redis
    from eventforge_redis import RedisPermissionError, RedisTransport

    server = redis_server_factory()
    url = limited_user(server)
    admin = redis.Redis(port=server.port)
    root = _root()
    allowed, denied = f"allowed.{root}", f"denied.{root}"
    transport = RedisTransport.from_url(url)
    try:
        got: list[object] = []
        transport.subscribe(allowed, lambda m: got.append(m.payload))
        before = _evalsha_calls(admin)

        def queue() -> int:
            for n in range(200):
                transport.send(Message(denied if n == 100 else allowed, n))
            return 200

        _queue_as_one_batch(server, transport, allowed, queue)
        with pytest.raises(RedisPermissionError) as info:
            transport.flush(10)
        assert transport.flush(10)  # raised once
        expected = ["lead", *(n for n in range(200) if n != 100)]
        assert wait_until(lambda: len(got) >= len(expected))
        calls = _evalsha_calls(admin) - before
        stats = transport.stats()
        print(f"script_calls={calls} stats={stats} error={info.value}")
        assert got == expected
        # The lead message; 0..100 in one call, cut after the refused message (a topic not
        # published before may reach a group, so it ends its call); 101..199 in another.
        assert calls == 3
        assert stats["publish_errors"] == 1
        assert stats["published"] == 200
        assert stats["publish_dropped"] == 0
        assert "ACL" in str(info.value)
        assert "limitedpw" not in str(info.value)
    finally:
        transport.close()
        admin.close()


def test_counted_publishes_get_their_own_counts_inside_a_large_batch(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """20 send_counted calls queued among 500 sends, all routed by one script call: each gets
    the receivers and groups of its own message, and every group message is delivered."""
    import redis
    from eventforge_redis import RedisTransport

    server = redis_server_factory()
    admin = redis.Redis(port=server.port)
    root = _root()
    publisher, listener, worker = (RedisTransport.from_url(server.url) for _ in range(3))
    try:
        plain: list[object] = []
        grouped: list[object] = []
        listener.subscribe(f"{root}.p", lambda m: plain.append(m.payload))
        listener.subscribe(f"{root}.both", lambda m: plain.append(m.payload))
        worker.subscribe(f"{root}.g.*", lambda m: grouped.append(m.payload), group="g")
        worker.subscribe(f"{root}.both", lambda m: grouped.append(m.payload), group="b")
        # (topic, expected count): a pub/sub connection, a wildcard group, both, nobody.
        kinds = [(f"{root}.p", 1), (f"{root}.g.x", 1), (f"{root}.both", 2), (f"{root}.none", 0)]
        results: dict[int, int] = {}
        threads = [
            threading.Thread(
                target=lambda n=n: results.__setitem__(
                    n, publisher.send_counted(Message(kinds[n % 4][0], f"c{n}"))
                )
            )
            for n in range(20)
        ]

        def queue() -> int:
            for n in range(500):
                publisher.send(Message(kinds[n % 4][0], n))
            for thread in threads:
                thread.start()
            return 520

        _queue_as_one_batch(server, publisher, f"{root}.none", queue)
        for thread in threads:
            thread.join(20)
        assert publisher.flush(10)
        # plain: 125 to .p and 125 to .both, plus 5 + 5 counted; grouped: 125 + 125 + 5 + 5.
        assert wait_until(lambda: len(plain) >= 260 and len(grouped) >= 260, 20)
        stats = publisher.stats()
        print(f"results={results} stats={stats}")
        assert results == {n: kinds[n % 4][1] for n in range(20)}
        assert sorted(p for p in plain if isinstance(p, int)) == [
            n for n in range(500) if n % 4 in (0, 2)
        ]
        assert sorted(p for p in grouped if isinstance(p, int)) == [
            n for n in range(500) if n % 4 in (1, 2)
        ]
        assert stats["published"] == 521
        assert stats["routed_to_groups"] == 250 + 10
        assert stats["publish_errors"] == 0
        assert _evalsha_calls(admin) >= 2
    finally:
        for transport in (publisher, listener, worker):
            transport.close()
        admin.close()


def test_large_envelopes_are_split_into_script_calls_of_at_most_one_mebibyte(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """Ten 300 kB envelopes in one batch take four script calls (three per MiB), in order."""
    import redis
    from eventforge_redis import RedisTransport

    server = redis_server_factory()
    admin = redis.Redis(port=server.port)
    root = _root()
    publisher, listener = (RedisTransport.from_url(server.url) for _ in range(2))
    try:
        got: list[str] = []
        listener.subscribe(root, lambda m: got.append(m.payload))
        before = _evalsha_calls(admin)

        def queue() -> int:
            for n in range(10):
                publisher.send(Message(root, f"{n}:" + "x" * 300_000))
            return 10

        _queue_as_one_batch(server, publisher, root, queue)
        assert publisher.flush(10)
        assert wait_until(lambda: len(got) >= 11, 20)
        calls = _evalsha_calls(admin) - before
        print(f"script_calls={calls}")
        assert [p.split(":")[0] for p in got] == ["lead", *(str(n) for n in range(10))]
        assert calls == 1 + 4
        assert publisher.stats()["published"] == 11
    finally:
        publisher.close()
        listener.close()
        admin.close()


def test_script_flush_mid_stream_reloads_and_resends_without_loss_or_duplicates(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """SCRIPT FLUSH between sends: the next script call is refused with NOSCRIPT, the
    publisher loads the script again and resends that call; the subscriber gets every
    message once, in order, and a group gets each message once too."""
    import redis
    from eventforge_redis import RedisTransport

    server = redis_server_factory()
    admin = redis.Redis(port=server.port)
    root = _root()
    publisher, listener, worker = (RedisTransport.from_url(server.url) for _ in range(3))
    try:
        got: list[int] = []
        grouped: list[int] = []
        listener.subscribe(root, lambda m: got.append(m.payload))
        worker.subscribe(root, lambda m: grouped.append(m.payload), group="g")
        total = 20_000
        for n in range(total):
            publisher.send(Message(root, n))
            if n % 2_000 == 1_000:
                admin.script_flush()
            elif n % 2_000 == 1_999:
                # One SCRIPT FLUSH at a time: several landing on one batch is "SCRIPT FLUSH in
                # a loop", which the publisher gives up on by design (it fails the batch).
                assert publisher.flush(20)
        assert publisher.flush(20)
        assert wait_until(lambda: len(got) >= total and len(grouped) >= total, 30)
        noscript = admin.info("errorstats").get("errorstat_NOSCRIPT", {}).get("count", 0)
        stats = publisher.stats()
        print(f"noscript_replies={noscript} stats={stats}")
        assert noscript >= 1
        assert got == list(range(total))
        assert sorted(grouped) == list(range(total))
        assert stats["published"] == total
        assert stats["routed_to_groups"] == total
        assert stats["publish_errors"] == 0
        assert stats["publish_dropped"] == 0
    finally:
        for transport in (publisher, listener, worker):
            transport.close()
        admin.close()


def test_members_of_a_group_share_a_batch_published_to_its_topic(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """Messages for a topic that goes to a group are not batched into one script call: Redis
    serves the blocked members between calls, so both members take a share of a burst (one
    call appending the whole burst would hand it all to whichever member reads first)."""
    from eventforge_redis import RedisTransport

    server = redis_server_factory()
    root = _root()
    publisher, first, second = (RedisTransport.from_url(server.url) for _ in range(3))
    try:
        got: dict[str, list[int]] = {"first": [], "second": []}
        first.subscribe(root, lambda m: got["first"].append(m.payload), group="g")
        second.subscribe(root, lambda m: got["second"].append(m.payload), group="g")
        assert publisher.send_counted(Message(root, -1)) == 1  # the topic is known to reach a group

        assert wait_until(lambda: len(got["first"]) + len(got["second"]) == 1)
        # A burst queued faster than the writer's round trips. Which member Redis serves is
        # up to the scheduling of both readers, so a loaded machine gets up to three bursts to
        # show both members taking a share; one call appending a whole burst never would.
        sent = 1
        for burst in range(3):
            shares = {k: len(v) for k, v in got.items()}
            for n in range(50):
                publisher.send(Message(root, burst * 50 + n))
            sent += 50
            assert publisher.flush(10)
            assert wait_until(lambda: len(got["first"]) + len(got["second"]) >= sent, 20)
            print(f"burst {burst}: first={len(got['first'])} second={len(got['second'])}")
            if all(len(got[k]) > shares[k] for k in got):
                break
        assert sorted(got["first"] + got["second"]) == list(range(-1, sent - 1))
        assert any(n >= 0 for n in got["first"])  # both took a share of a burst
        assert any(n >= 0 for n in got["second"])
        assert publisher.stats()["routed_to_groups"] == sent
    finally:
        for transport in (publisher, first, second):
            transport.close()
