"""When a client tries to reconnect: the kit's Backoff curve, from the moment the link dropped."""

from __future__ import annotations

import pytest
from eventforge.transport import Backoff
from eventforge_tcp._reconnect import ReconnectSchedule
from eventforge_tcp.transport import TCPClientTransport


def test_attempts_follow_the_backoff_curve_from_the_moment_the_link_dropped() -> None:
    schedule = ReconnectSchedule(Backoff(initial=0.1, cap=0.5, jitter=0))
    schedule.lost(100.0)
    assert not schedule.due(100.05)
    assert schedule.due(100.1)
    waits = []
    for attempt in range(1, 6):
        assert schedule.failed(100.1) == attempt
        waits.append(schedule.next_at - 100.1)
    assert waits == pytest.approx([0.2, 0.4, 0.5, 0.5, 0.5])
    assert schedule.restored(101.0) == pytest.approx(1.0)
    assert schedule.attempts == 0
    schedule.lost(200.0)
    assert schedule.next_at == pytest.approx(200.1), "a new outage starts the curve again"


def test_jitter_only_lengthens_a_wait_and_never_past_the_longest_delay() -> None:
    schedule = ReconnectSchedule(Backoff(initial=0.1, cap=0.15, jitter=0.5))
    firsts = []
    for _ in range(200):
        schedule.lost(0.0)
        firsts.append(schedule.next_at)
    assert all(0.1 <= wait <= 0.15 for wait in firsts)
    assert len(set(firsts)) > 1, "clients of one server must not come back in lock-step"


def test_a_client_reconnects_from_reconnect_delay_up_to_reconnect_max_delay() -> None:
    client = TCPClientTransport(reconnect_delay=0.2, reconnect_max_delay=1.0)
    assert client._conn._schedule.backoff == Backoff(initial=0.2, cap=1.0)
    shortest = TCPClientTransport(reconnect_delay=3.0, reconnect_max_delay=1.0)
    assert shortest._conn._schedule.backoff.cap == 3.0, "the cap is never below the first delay"
