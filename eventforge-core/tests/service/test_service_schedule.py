"""Periodic schedules: tick arithmetic, cron with time zones, claims, missed ticks, and one
firing per tick across worker processes (Redis and NATS)."""

from __future__ import annotations

import itertools
import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from eventforge import connect
from eventforge.errors import ConfigurationError, UnsupportedCapabilityError
from eventforge.service import Service
from eventforge.service.schedule import Cron, Every, Tick
from eventforge.testing import wait_until
from eventforge.testing.brokers import NatsServer, RedisServer
from eventforge.testing.schedules import one_firing_per_tick, run_ticker
from eventforge.transports.memory import MemoryTransport


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=timezone.utc).timestamp()  # type: ignore[misc]


def test_every_ticks_on_multiples_of_the_interval_since_the_epoch() -> None:
    every = Every(60)
    assert every.next_after(utc(2026, 1, 1, 12, 0, 30)) == utc(2026, 1, 1, 12, 1)
    assert every.next_after(utc(2026, 1, 1, 12, 1)) == utc(2026, 1, 1, 12, 2)  # strictly after
    ticks = list(every.ticks(utc(2026, 1, 1, 12, 0), utc(2026, 1, 1, 12, 3)))
    assert ticks == [utc(2026, 1, 1, 12, m) for m in (1, 2, 3)]


def test_every_takes_a_timedelta_and_an_offset() -> None:
    every = Every(timedelta(hours=1), offset=15 * 60)
    assert every.next_after(utc(2026, 1, 1, 12, 0)) == utc(2026, 1, 1, 12, 15)
    assert every.next_after(utc(2026, 1, 1, 12, 15)) == utc(2026, 1, 1, 13, 15)


@pytest.mark.parametrize("interval", [0, -1, float("inf"), float("nan")])
def test_every_refuses_an_interval_that_is_not_positive(interval: float) -> None:
    with pytest.raises(ConfigurationError, match="interval must be > 0"):
        Every(interval)


def test_cron_follows_local_time_across_the_spring_dst_change() -> None:
    cron = Cron("0 3 * * *", tz="Europe/Berlin")
    ticks = list(cron.ticks(utc(2026, 3, 27, 12), utc(2026, 3, 30, 12)))
    # 03:00 in Berlin is 02:00 UTC in winter time and 01:00 UTC from 29 March (summer time).
    assert [datetime.fromtimestamp(t, timezone.utc).hour for t in ticks] == [2, 1, 1]


def test_cron_fires_a_repeated_autumn_local_time_at_both_instants() -> None:
    cron = Cron("30 2 * * *", tz="Europe/Berlin")
    ticks = list(cron.ticks(utc(2026, 10, 24, 12), utc(2026, 10, 25, 12)))
    assert [datetime.fromtimestamp(t, timezone.utc).strftime("%H:%M") for t in ticks] == [
        "00:30",
        "01:30",
    ]


def test_a_bad_cron_expression_or_time_zone_is_refused_with_what_to_write() -> None:
    with pytest.raises(ConfigurationError, match="five fields"):
        Cron("every day at noon")
    with pytest.raises(ConfigurationError, match="IANA name"):
        Cron("* * * * *", tz="Mars/Olympus")


def test_memory_claims_a_key_once_until_its_ttl_passes() -> None:
    transport = MemoryTransport()
    assert transport.claim("k", 0.2) is True
    assert transport.claim("k", 0.2) is False
    time.sleep(0.25)
    assert transport.claim("k", 0.2) is True
    transport.close()


def test_a_schedule_fires_every_interval_with_its_tick() -> None:
    svc = Service("timer", probe_interval=None)
    ticks: list[Tick] = []
    svc.every(0.1, name="beat")(ticks.append)
    with svc:
        assert wait_until(lambda: len(ticks) >= 5, timeout=10)
        report = {s["name"]: s for s in svc.health()["subscriptions"]}
    assert report["beat"]["kind"] == "schedule"
    assert report["beat"]["delivered"] >= 5
    scheduled = [t.scheduled.timestamp() for t in ticks[:5]]
    assert all(abs(s * 10 - round(s * 10)) < 1e-3 for s in scheduled)  # on the 0.1 s grid
    assert all(b - a == pytest.approx(0.1, abs=1e-3) for a, b in itertools.pairwise(scheduled))
    assert all(not t.late for t in ticks)
    assert all(t.fired_at >= t.scheduled for t in ticks)


def test_an_async_schedule_without_a_tick_argument_runs() -> None:
    svc = Service("async-timer", probe_interval=None)
    calls: list[int] = []

    @svc.every(0.1)
    async def beat() -> None:
        calls.append(1)

    with svc:
        assert wait_until(lambda: len(calls) >= 3, timeout=10)


def test_a_failing_schedule_is_counted_and_keeps_its_rhythm() -> None:
    svc = Service("failing", probe_interval=None)
    calls: list[int] = []

    @svc.every(0.1)
    def boom() -> None:
        calls.append(1)
        raise RuntimeError("nope")

    with svc:
        assert wait_until(lambda: len(calls) >= 3, timeout=10)
        sub = svc.health()["subscriptions"][0]
    assert sub["errors"] >= 3
    assert sub["last_error"] == "RuntimeError: nope"


def test_missed_all_fires_every_tick_nobody_fired_and_once_only_the_latest() -> None:
    transport = MemoryTransport()
    now = time.time()
    past = list(Every(0.5).ticks(now - 2.4, now))
    assert len(past) >= 4
    # Another worker fired the second tick before this one started.
    assert transport.claim(f"schedule.late.every.{round(past[1] * 1000)}", 60)
    svc = Service("late", transport, probe_interval=None)
    fired: list[Tick] = []
    svc.every(0.5, name="every", missed="all", catch_up=2.4)(fired.append)
    with svc:
        assert wait_until(lambda: len([t for t in fired if t.late]) >= len(past) - 1, 10)
    late = [t.scheduled.timestamp() for t in fired if t.late]
    assert late[: len(past) - 1] == [t for t in past if t != past[1]][: len(past) - 1]

    svc2 = Service("late2", MemoryTransport(), probe_interval=None)
    once: list[Tick] = []
    svc2.every(0.5, name="every", missed="once", catch_up=2.4)(once.append)
    with svc2:
        assert wait_until(lambda: len(once) >= 1, 10)
    assert len([t for t in once if t.late]) == 1


def test_missed_skip_fires_nothing_for_the_past() -> None:
    svc = Service("skip", probe_interval=None)
    fired: list[Tick] = []
    svc.every(0.2, missed="skip", catch_up=5)(fired.append)
    with svc:
        assert wait_until(lambda: len(fired) >= 1, 10)
    assert not any(t.late for t in fired)


def test_schedule_declarations_are_checked() -> None:
    svc = Service("checked")
    with pytest.raises(ConfigurationError, match="skip, once, all"):
        svc.every(1, name="x", missed="sometimes")(lambda: None)
    with pytest.raises(ConfigurationError, match="name="):
        svc.every(1)(lambda: None)
    svc.every(1, name="a")(lambda: None)
    with pytest.raises(ValueError, match="declared twice"):
        svc.every(2, name="a")(lambda: None)


def test_a_transport_that_cannot_claim_refuses_schedules_at_start() -> None:
    pytest.importorskip("eventforge_tcp")
    from eventforge.transports.tcp import TCPServerTransport

    server = TCPServerTransport("127.0.0.1", 0).start()
    svc = Service("no-claims", server, probe_interval=None)
    svc.every(1, name="tick")(lambda: None)
    with pytest.raises(UnsupportedCapabilityError, match="claims"):
        svc.start()
    assert not svc.running
    server.close()


@pytest.mark.broker
def test_redis_claims_a_key_once_across_clients(redis_server: RedisServer) -> None:
    a, b = connect(redis_server.url), connect(redis_server.url)
    try:
        key = f"test.{os.urandom(4).hex()}"
        assert [a.claim(key, 5), b.claim(key, 5), a.claim(key, 5)] == [True, False, False]
        assert a.claim(key + ".short", 0.1)
        assert not b.claim(key + ".short", 0.1)
        time.sleep(0.2)
        assert b.claim(key + ".short", 0.1)
    finally:
        a.close()
        b.close()


@pytest.mark.broker
def test_nats_claims_a_key_once_across_connections(nats_server: NatsServer) -> None:
    a, b = connect(nats_server.url), connect(nats_server.url)
    try:
        key = f"test.{os.urandom(4).hex()}"
        assert [a.claim(key, 5), b.claim(key, 5), a.claim(key, 5)] == [True, False, False]
        with pytest.raises(ValueError, match="duplicate window"):
            a.claim("too-long", 10 * 86_400)
    finally:
        a.close()
        b.close()


def _three_workers_one_firing_per_tick(tmp_path: Path, url: str) -> None:
    env = {"EF_TEST_INTERVAL": "0.5"}
    firings = run_ticker(tmp_path, url, workers=3, seconds=5.0, kill_one_after=2.0, env=env)
    report = one_firing_per_tick(firings, "beat-skip", 0.5)
    print("\n" + report.line(f"schedule across 3 workers ({url.split(':')[0]})"))
    assert report.duplicates == 0
    assert report.misses == []


@pytest.mark.broker
@pytest.mark.slow
def test_three_redis_workers_fire_each_tick_once_through_a_worker_kill(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    _three_workers_one_firing_per_tick(tmp_path, redis_server.url)


@pytest.mark.broker
@pytest.mark.slow
def test_three_nats_workers_fire_each_tick_once_through_a_worker_kill(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    _three_workers_one_firing_per_tick(tmp_path, nats_server.url)


@pytest.mark.broker
@pytest.mark.slow
def test_missed_ticks_across_a_worker_restart_follow_each_policy(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """A worker runs one schedule per policy, stops, stays down while ticks pass, and starts
    again: ``skip`` fires none of the missed ticks, ``once`` only the latest, ``all`` every
    one (and, with the ticks fired before, every tick from the first to the last); no tick
    fires twice."""
    step = 200
    env = {
        "EF_TEST_SERVICE": f"missed-{os.urandom(3).hex()}",
        "EF_TEST_INTERVAL": str(step / 1000),
        "EF_TEST_MISSED": "skip,once,all",
        "EF_TEST_CATCH_UP": "10",
    }
    firings = run_ticker(tmp_path, redis_server.url, seconds=1.0, env=env)
    before = len(firings.all)
    time.sleep(0.6)  # no worker runs: these ticks (and those of the restart) pass unfired
    firings = run_ticker(tmp_path, redis_server.url, seconds=0.5, env=env, firings=firings)
    gaps = {}
    for policy in ("skip", "once", "all"):
        mine = firings.of(f"beat-{policy}")
        assert mine, f"beat-{policy} never fired"
        ticks = [f.tick_ms for f in mine]
        assert len(ticks) == len(set(ticks)), f"beat-{policy} fired a tick twice"
        first_run = [f for f in firings.all[:before] if f.name == f"beat-{policy}"]
        second_run = [f for f in firings.all[before:] if f.name == f"beat-{policy}"]
        last_before = max(f.tick_ms for f in first_run if not f.late)
        first_after = min(f.tick_ms for f in second_run if not f.late)
        gap = list(range(last_before + step, first_after, step))
        gaps[policy] = len(gap)
        assert len(gap) >= 3, f"only {len(gap)} ticks were missed; the test needs a longer gap"
        caught_up = sorted(f.tick_ms for f in second_run if f.late)
        if policy == "skip":
            assert caught_up == []
            assert not [t for t in ticks if last_before < t < first_after]
        elif policy == "once":
            assert caught_up == [gap[-1]]
        else:
            assert [t for t in caught_up if t > last_before] == gap
            assert sorted(ticks) == list(range(min(ticks), max(ticks) + step, step))
    print(f"\nmissed ticks across a restart (redis): ticks missed per schedule {gaps}")
