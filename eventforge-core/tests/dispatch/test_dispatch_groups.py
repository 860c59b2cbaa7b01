"""Dispatchers chosen by name: as the chooser of a MessageQueue group member, and in the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections import Counter

from eventforge import Message, MessageQueue

WAIT = 10.0


def test_group_member_chosen_by_least_loaded_skips_the_busy_member() -> None:
    queue = MessageQueue()
    release = threading.Event()
    entered = threading.Event()
    seen: list[tuple[str, int]] = []
    lock = threading.Lock()

    def slow(message: Message) -> None:
        with lock:
            seen.append(("slow", message.payload))
        entered.set()
        assert release.wait(WAIT)

    def fast(message: Message) -> None:
        with lock:
            seen.append(("fast", message.payload))

    queue.subscribe("jobs", slow, group="workers", dispatcher="least_loaded")
    queue.subscribe("jobs", fast, group="workers", dispatcher="least_loaded")
    # The memory transport delivers on the publisher's thread: this publish stays inside
    # ``slow`` until released, so ``slow`` has one message in flight.
    blocked = threading.Thread(target=queue.publish, args=("jobs", 0))
    blocked.start()
    try:
        assert entered.wait(WAIT)
        for n in range(1, 6):
            queue.publish("jobs", n)
    finally:
        release.set()
        blocked.join(WAIT)
        queue.close()
    assert seen[0] == ("slow", 0)
    assert seen[1:] == [("fast", n) for n in range(1, 6)]


def test_group_member_chosen_round_robin_by_name_is_even() -> None:
    queue = MessageQueue()
    hits: Counter[str] = Counter()
    for name in ("a", "b", "c"):
        queue.subscribe(
            "jobs", lambda m, name=name: hits.update([name]), group="g", dispatcher="rr"
        )
    for n in range(30):
        queue.publish("jobs", n)
    queue.close()
    assert hits == {"a": 10, "b": 10, "c": 10}


def test_eventforge_plugins_lists_the_four_dispatchers_from_core() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from eventforge.cli import main; sys.exit(main())",
            "plugins",
            "--json",
            "--kind",
            "dispatcher",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = {row["name"]: row for row in json.loads(out)}
    assert {"broadcast", "round_robin", "concurrent", "least_loaded"} <= set(rows)
    for name in ("broadcast", "round_robin", "concurrent", "least_loaded"):
        assert rows[name]["distribution"] == "eventforge-core"
        assert rows[name]["status"] == "ok"
        assert rows[name]["target"].startswith("eventforge.dispatch:")
