"""SpoolTransport behaviour beyond the conformance suite: processes, persistence, cleanup."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import eventforge
import pytest
from eventforge import ConfigurationError, Message
from eventforge_example_transport import SpoolTransport


def _run(code: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done


def test_messages_from_another_process_arrive_in_order(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    got: list[Message] = []
    all_in = threading.Event()

    def collect(message: Message) -> None:
        got.append(message)
        if len(got) == 50:
            all_in.set()

    with eventforge.connect(f"spool://{spool}") as transport:
        transport.subscribe("orders.**", collect)
        _run(
            f"""
            import eventforge
            from eventforge import Message
            with eventforge.connect("spool://{spool}") as t:
                for n in range(50):
                    t.send(Message("orders.created.eu", {{"n": n}}, {{"source": "child"}}))
            """
        )
        assert all_in.wait(10)
    assert [m.payload for m in got] == [{"n": n} for n in range(50)]
    assert {m.headers["source"] for m in got} == {"child"}


def test_messages_wait_on_disk_until_consumed(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    with SpoolTransport(spool) as reader:
        assert reader.receive("jobs", timeout=0) is None  # opens the inbox
        _run(
            f"""
            from eventforge import Message
            from eventforge_example_transport import SpoolTransport
            with SpoolTransport({str(spool)!r}) as t:
                for n in range(3):
                    t.send(Message("jobs", n))
            """
        )
        # the writer process has exited; its messages are still there, in order
        assert [reader.receive("jobs", timeout=5).payload for _ in range(3)] == [0, 1, 2]  # type: ignore[union-attr]
        assert reader.receive("jobs", timeout=0.05) is None


def test_inboxes_of_dead_processes_are_removed(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    done = _run(
        f"""
        import os
        from eventforge_example_transport import SpoolTransport
        t = SpoolTransport({str(spool)!r})
        t.subscribe("a", print)
        print(os.getpid())
        os._exit(0)  # dies without closing: its inbox is left behind
        """
    )
    dead_pid = done.stdout.strip()
    leftovers = [p for p in (spool / "subs").iterdir() if p.name.startswith(f"{dead_pid}-")]
    assert len(leftovers) == 1
    with SpoolTransport(spool) as transport:
        assert not leftovers[0].exists()
        transport.send(Message("a", "nobody listens"))
        assert transport.stats()["written"] == 0
        assert transport.stats()["unrouted"] == 1


def test_malformed_files_are_rejected_and_counted(tmp_path: Path) -> None:
    with SpoolTransport(tmp_path) as transport:
        transport.receive("t", timeout=0)
        (inbox,) = [p for p in (tmp_path / "subs").iterdir() if not p.name.startswith(".")]
        (inbox / "00000000000000000001-x.msg").write_bytes(b"{not json")
        transport.send(Message("t", "fine"))
        message = transport.receive("t", timeout=5)
        assert message is not None
        assert message.payload == "fine"
        assert transport.stats()["rejected"] == 1


def test_unsubscribe_stops_delivery_and_counts_discarded(tmp_path: Path) -> None:
    with SpoolTransport(tmp_path, poll_interval=60) as transport:  # the reader will not run again
        got: list[Message] = []
        sub = transport.subscribe("t", got.append)
        transport.send(Message("t", 1))
        assert transport.unsubscribe(sub)
        assert not transport.unsubscribe(sub)
        assert transport.stats()["discarded"] <= 1
        assert transport.stats()["discarded"] + len(got) == 1
        transport.send(Message("t", 2))
        assert transport.stats()["written"] == 1


def test_from_url_and_connect_errors(tmp_path: Path) -> None:
    with SpoolTransport.from_url(f"spool://{tmp_path}?poll_interval=0.5") as transport:
        assert transport.poll_interval == 0.5
        assert transport.directory == tmp_path
    with pytest.raises(ConfigurationError, match="not a spool URL"):
        SpoolTransport.from_url("spool://somehost/dir")
    with pytest.raises(ConfigurationError, match="unknown option 'interval'"):
        SpoolTransport.from_url(f"spool://{tmp_path}?interval=1")
    with pytest.raises(ConfigurationError, match="poll_interval must be > 0"):
        SpoolTransport(tmp_path, poll_interval=0)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigurationError, match="cannot use"):
        SpoolTransport(tmp_path / "file" / "below-a-file")
