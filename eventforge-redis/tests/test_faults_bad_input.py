"""Bad input over Redis (RELIABILITY rows 12, 16, 17): refused, counted, the reader survives."""

from __future__ import annotations

import base64
import json
import os
import pickle
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from eventforge.errors import FrameTooLarge
from eventforge.message import Message

pytestmark = pytest.mark.broker


def _wait(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_oversize_message_raises_before_publish(make_redis: Callable[..., object]) -> None:
    """The size check runs in ``send``, before anything reaches Redis."""
    transport = make_redis(max_size=1024)
    with pytest.raises(FrameTooLarge):
        transport.send(Message("big.t", "x" * 4096))  # type: ignore[attr-defined]
    transport.flush()  # type: ignore[attr-defined]
    assert transport.stats()["published"] == 0  # type: ignore[attr-defined]


class _Sentinel:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


def test_pickle_and_cpu_bomb_payloads_are_refused(
    tmp_path: Path, make_redis: Callable[..., object]
) -> None:
    """A pickle payload from an untrusted peer is never unpickled; a 5,000-digit integer and
    deep nesting are rejected; each is counted and the subscription keeps delivering."""
    transport = make_redis()
    topic = f"bad.in{os.urandom(3).hex()}"
    got: list[object] = []
    transport.subscribe(topic, lambda m: got.append(m.payload))  # type: ignore[attr-defined]
    sentinel = tmp_path / "unpickled"
    evil = base64.b64encode(pickle.dumps(_Sentinel(str(sentinel)))).decode()
    frames = [
        json.dumps({"version": 1, "id": "p1", "topic": topic, "payload": evil,
                    "headers": {"content-type": "application/x-python-pickle"}}),
        f'{{"version": 1, "id": "b1", "topic": "{topic}", "payload": {"9" * 5000}}}',
        f'{{"version": 1, "id": "b2", "topic": "{topic}", "payload": {"[" * 100_000 + "]" * 100_000}}}',
    ]  # fmt: skip
    client = transport.client  # type: ignore[attr-defined]
    for frame in frames:
        client.publish(topic, frame)
    transport.send(Message(topic, "fine"))  # type: ignore[attr-defined]
    assert _wait(lambda: "fine" in got)
    stats = transport.stats()  # type: ignore[attr-defined]
    print(
        f"sentinel_absent={not sentinel.exists()} malformed={stats['malformed']} other_clients_ok=True"
    )
    assert not sentinel.exists()
    assert stats["malformed"] == 3
    assert got == ["fine"]
