"""Message and message ids."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from eventforge.message import Message, new_id


def test_defaults() -> None:
    message = Message("orders.created")
    assert message.payload is None
    assert message.headers == {}
    assert isinstance(message.timestamp, float)
    assert message.reply_to is None
    assert message.correlation_id is None
    assert message.id


def test_each_message_gets_its_own_headers_dict() -> None:
    first, second = Message("a"), Message("a")
    first.headers["k"] = "v"
    assert second.headers == {}


def test_explicit_fields_are_kept() -> None:
    message = Message(
        "a.b", [1], {"h": 1}, id="m1", timestamp=5.0, reply_to="r.x", correlation_id="c1"
    )
    assert message.to_dict() == {
        "id": "m1",
        "topic": "a.b",
        "payload": [1],
        "headers": {"h": 1},
        "timestamp": 5.0,
        "reply_to": "r.x",
        "correlation_id": "c1",
    }


def test_dict_round_trip_and_equality() -> None:
    message = Message("a.b", {"x": 1}, {"h": "v"}, reply_to="r", correlation_id="c")
    again = Message.from_dict(message.to_dict())
    assert again == message
    assert again is not message
    assert message != Message("a.b", {"x": 1}, {"h": "v"})  # another id
    assert message != "a.b"


def test_from_dict_fills_missing_optional_fields() -> None:
    message = Message.from_dict({"topic": "a"})
    assert message.payload is None
    assert message.headers == {}
    assert message.id


def test_copy_replaces_fields_and_copies_headers() -> None:
    message = Message("a.b", 1, {"h": "v"}, correlation_id="c")
    changed = message.copy(payload=2, topic="a.c")
    assert (changed.topic, changed.payload, changed.correlation_id) == ("a.c", 2, "c")
    assert changed.id == message.id
    changed.headers["h"] = "other"
    assert message.headers == {"h": "v"}


def test_messages_are_unhashable() -> None:
    with pytest.raises(TypeError):
        hash(Message("a"))


def test_messages_are_slotted() -> None:
    with pytest.raises(AttributeError):
        Message("a").extra = 1  # type: ignore[attr-defined]


def test_repr_shows_routing_fields_only_when_set() -> None:
    plain = repr(Message("a.b", 1, id="m1"))
    assert plain == "Message(topic='a.b', payload=1, headers={}, id='m1')"
    routed = repr(Message("a.b", 1, id="m1", reply_to="r", correlation_id="c"))
    assert routed.endswith("id='m1', reply_to='r', correlation_id='c')")


def test_ids_are_unique_hex_with_a_process_prefix() -> None:
    ids = [new_id() for _ in range(100_000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{17,}", i) for i in ids[:1000])
    assert len({i[:16] for i in ids}) == 1


def test_two_processes_draw_different_prefixes() -> None:
    code = "from eventforge.message import new_id; print(new_id())"
    out = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
        ).stdout.strip()
        for _ in range(2)
    }
    out.add(new_id())
    assert len({i[:16] for i in out}) == 3


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_draws_a_new_prefix() -> None:
    parent_id = new_id()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report an id and leave without running pytest's cleanup
        os.close(read_end)
        os.write(write_end, new_id().encode())
        os._exit(0)
    os.close(write_end)
    child_id = os.read(read_end, 100).decode()
    os.close(read_end)
    os.waitpid(pid, 0)
    assert child_id
    assert child_id[:16] != parent_id[:16]
