"""Periodic schedules that fire once per tick across every worker of a service.

A schedule's ticks are computed the same way in every process: ``every(60)`` ticks at the
multiples of 60 seconds since the Unix epoch (plus ``offset``), a cron expression at the times
:mod:`croniter` gives in the schedule's time zone (DST included). At each tick every worker
tries to *claim* the tick's identity, ``schedule.<service>.<name>.<tick in ms>``, through the
transport (:meth:`~eventforge.transport.Transport.claim`: Redis ``SET NX``, JetStream
``Nats-Msg-Id`` dedupe, in-process for memory); the one claim that succeeds fires the handler.

After downtime, ``missed`` decides what happens to ticks that passed while no worker ran, looking
back ``catch_up`` seconds when a worker starts: ``"skip"`` (default) fires none, ``"once"`` fires
the latest one if nobody did, ``"all"`` fires each that nobody did, oldest first, at most
``max_catch_up`` of them.
"""

from __future__ import annotations

import inspect
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

from eventforge.errors import ConfigurationError
from eventforge.service.health import HealthState, Tracker
from eventforge.topics import validate_topic
from eventforge.transport import Counter, Transport, run_sync

__all__ = ["MISSED_POLICIES", "Cron", "Every", "Schedule", "Scheduler", "Tick"]

log = logging.getLogger("eventforge.service.schedule")

MISSED_POLICIES = ("skip", "once", "all")
CLAIM_SLACK = 60.0
"""Seconds a claimed tick stays claimed beyond the catch-up window (workers' clocks differ)."""
MAX_CLAIM = 86_400.0


@dataclass(frozen=True)
class Tick:
    """One firing: the schedule's name, the tick it fires for, and when it actually fired."""

    name: str
    scheduled: datetime
    fired_at: datetime
    late: bool = False
    """True for a tick fired on start-up by the ``missed`` policy."""


class Every:
    """Ticks every ``interval`` seconds, aligned to the Unix epoch plus ``offset``."""

    def __init__(self, interval: float | timedelta, offset: float = 0.0) -> None:
        seconds = interval.total_seconds() if isinstance(interval, timedelta) else float(interval)
        if not seconds > 0 or math.isinf(seconds):
            raise ConfigurationError(f"a schedule's interval must be > 0 seconds, got {interval!r}")
        self.interval = seconds
        self.offset = float(offset) % seconds

    def next_after(self, t: float) -> float:
        """The first tick strictly after ``t`` (Unix time)."""
        k = math.floor((t - self.offset) / self.interval) + 1
        return k * self.interval + self.offset

    def ticks(self, start: float, end: float) -> Iterator[float]:
        """Ticks in ``(start, end]``, oldest first."""
        tick = self.next_after(start)
        while tick <= end:
            yield tick
            tick += self.interval

    def __repr__(self) -> str:
        return f"every {self.interval:g} s"


class Cron:
    """Ticks at the times a cron expression gives in time zone ``tz`` (needs ``croniter``)."""

    def __init__(self, expression: str, tz: str | tzinfo = "UTC") -> None:
        try:
            import croniter  # optional dependency: eventforge-core[cron]
        except ImportError:
            raise ConfigurationError(
                "cron schedules need croniter: pip install 'eventforge-core[cron]'",
                key="cron",
            ) from None
        if not croniter.croniter.is_valid(expression):
            raise ConfigurationError(
                f"invalid cron expression {expression!r}: write five fields, e.g. '*/5 * * * *' "
                "(minute hour day-of-month month day-of-week)",
                key="cron",
            )
        self.expression = expression
        self.tz = _zone(tz)
        self._croniter = croniter.croniter

    def next_after(self, t: float) -> float:
        start = datetime.fromtimestamp(t, self.tz)
        return float(self._croniter(self.expression, start).get_next(float))

    def ticks(self, start: float, end: float) -> Iterator[float]:
        it = self._croniter(self.expression, datetime.fromtimestamp(start, self.tz))
        while True:
            tick = float(it.get_next(float))
            if tick > end:
                return
            yield tick

    def __repr__(self) -> str:
        return f"cron {self.expression!r} ({self.tz})"


def _zone(tz: str | tzinfo) -> tzinfo:
    if isinstance(tz, tzinfo):
        return tz
    if tz.upper() == "UTC":
        return timezone.utc
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo(tz)
    except Exception:
        raise ConfigurationError(
            f"unknown time zone {tz!r}: use an IANA name such as 'Europe/Berlin' (on Windows "
            "install tzdata)",
            key="tz",
        ) from None


@dataclass
class Schedule:
    """A declared schedule: its trigger, handler and missed-tick policy."""

    name: str
    trigger: Every | Cron
    handler: Callable[..., Any]
    missed: str = "skip"
    catch_up: float = 3600.0
    max_catch_up: int = 100
    tracker: Tracker = field(init=False)
    fired: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        validate_topic(self.name)
        if self.missed not in MISSED_POLICIES:
            raise ConfigurationError(
                f"missed={self.missed!r}: choose one of {', '.join(MISSED_POLICIES)}",
                key="missed",
            )
        if self.catch_up < 0 or self.max_catch_up < 1:
            raise ConfigurationError("catch_up must be >= 0 seconds and max_catch_up >= 1")
        self.tracker = Tracker(name=self.name, kind="schedule", target=repr(self.trigger))

    @property
    def claim_ttl(self) -> float:
        """How long a fired tick stays claimed: past the catch-up window when missed ticks are
        fired on start-up (so a restart never fires a tick twice), else a minute."""
        window = self.catch_up if self.missed != "skip" else 0.0
        return min(MAX_CLAIM, window + CLAIM_SLACK)


class Scheduler:
    """One thread per schedule: wait for the next tick, claim it, fire it."""

    def __init__(self, service: str, transport: Transport, schedules: list[Schedule]) -> None:
        self.service = service
        self.transport = transport
        self.schedules = schedules
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def key(self, schedule: Schedule, tick: float) -> str:
        """The identity of one tick, the same in every process."""
        return f"schedule.{self.service}.{schedule.name}.{round(tick * 1000)}"

    def start(self) -> None:
        for schedule in self.schedules:
            thread = threading.Thread(
                target=self._run,
                args=(schedule,),
                name=f"eventforge-schedule-{schedule.name}",
                daemon=True,
            )
            self._threads.append(thread)
            schedule.tracker.alive = thread.is_alive
            schedule.tracker.set(HealthState.IDLE)
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
        for schedule in self.schedules:
            schedule.tracker.alive = None
            schedule.tracker.set(HealthState.FAILED, "stopped")

    def _run(self, schedule: Schedule) -> None:
        now = time.time()
        self._catch_up(schedule, now)
        last = now
        while not self._stop.is_set():
            tick = schedule.trigger.next_after(last)
            # Event.wait runs on the monotonic clock: wait again until the wall clock is there.
            while (left := tick - time.time()) > 0:
                if self._stop.wait(left):
                    return
            last = tick
            self._attempt(schedule, tick, late=False)

    def _catch_up(self, schedule: Schedule, now: float) -> None:
        if schedule.missed == "skip" or schedule.catch_up <= 0:
            return
        past = list(schedule.trigger.ticks(now - schedule.catch_up, now))
        if schedule.missed == "once":
            past = past[-1:]
        for tick in past[-schedule.max_catch_up :]:
            if self._stop.is_set():
                return
            self._attempt(schedule, tick, late=True)

    def _attempt(self, schedule: Schedule, tick: float, *, late: bool) -> None:
        try:
            won = self.transport.claim(self.key(schedule, tick), schedule.claim_ttl)
        except Exception as exc:
            schedule.tracker.failed_now(exc)
            log.warning(
                "schedule %r: claiming the tick at %.3f failed: %s", schedule.name, tick, exc
            )
            return
        if not won:
            schedule.skipped.bump()
            return
        fired = Tick(
            schedule.name,
            datetime.fromtimestamp(tick, timezone.utc),
            datetime.now(timezone.utc),
            late=late,
        )
        schedule.fired.bump()
        schedule.tracker.delivered_now()
        try:
            result = _call(schedule.handler, fired)
            if inspect.isawaitable(result):
                run_sync(result)
        except Exception as exc:
            schedule.tracker.failed_now(exc)
            log.exception("schedule %r: the handler failed at the tick %s", schedule.name, fired)


def _call(handler: Callable[..., Any], tick: Tick) -> Any:
    try:
        takes_tick = bool(inspect.signature(handler).parameters)
    except (TypeError, ValueError):
        takes_tick = True
    return handler(tick) if takes_tick else handler()
