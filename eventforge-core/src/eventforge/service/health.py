"""Health of each subscription a service owns: its state, last delivery, errors and backlog.

A :class:`Tracker` is kept per subscription, group membership or work-queue consumer. Its
hot-path cost is one clock read and one counter bump per delivery; the state is derived only
when somebody asks (the ``/health`` endpoint, ``Service.health()``).

States:

``starting``
    declared, not yet subscribed (the service is starting);
``active``
    subscribed, and a message was delivered within ``idle_after`` seconds;
``idle``
    subscribed and alive, but nothing was delivered within ``idle_after`` seconds;
``recovering``
    the transport reports that its link is down and is reconnecting, or a stalled
    subscription was re-established and waits for a probe to get through;
``stalled``
    should be receiving but is not: its end-to-end probe did not come back in time, or (a
    work-queue consumer) its threads have stopped although the service is running;
``failed``
    subscribing failed, the service stopped it, or its transport is closed.
"""

from __future__ import annotations

import enum
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eventforge.transport import Counter

HISTORY = 10
"""How many recorded state changes a subscription keeps for ``/health``."""
RATE_WINDOW = 1.0
"""Seconds a delivery rate is measured over, at least (between two samples)."""

__all__ = ["HealthState", "Tracker", "health_report", "link_state"]


class HealthState(str, enum.Enum):
    """The state of one subscription; the value is what the endpoints print."""

    STARTING = "starting"
    ACTIVE = "active"
    IDLE = "idle"
    RECOVERING = "recovering"
    STALLED = "stalled"
    FAILED = "failed"

    @property
    def ready(self) -> bool:
        """Whether a service whose subscription is in this state can be called ready."""
        return self in (HealthState.ACTIVE, HealthState.IDLE)


def link_state(transport_stats: dict[str, Any]) -> bool | None:
    """Whether a transport's own counters say its link is up (``None``: it does not say).

    Transports report this as ``connected`` (a bool) or ``state`` (``"connected"`` or another
    word such as ``"reconnecting"``); in-process transports report neither.
    """
    connected = transport_stats.get("connected")
    if isinstance(connected, bool):
        return connected
    state = transport_stats.get("state")
    if isinstance(state, str):
        return state == "connected"
    return None


@dataclass
class Tracker:
    """What a service knows about one of its subscriptions.

    ``kind`` is ``"subscription"``, ``"group"``, ``"rpc"`` or ``"consumer"``; ``target`` the
    topic pattern, RPC service or work-queue name. ``required`` subscriptions decide readiness.
    """

    name: str
    kind: str
    target: str
    required: bool = True
    group: str | None = None
    delivered: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    resubscribed: Counter = field(default_factory=Counter)
    stalls: Counter = field(default_factory=Counter)
    """Times the subscription was recorded ``stalled`` (each entry into the state)."""
    last_delivery: float | None = None
    last_error: str | None = None
    backlog: Callable[[], int | None] | None = field(default=None, repr=False)
    alive: Callable[[], bool] | None = field(default=None, repr=False)
    overdue: Callable[[float], bool] | None = field(default=None, repr=False)
    probes: Callable[[], dict[str, int]] | None = field(default=None, repr=False)
    history: deque[tuple[float, str, str | None]] = field(
        default_factory=lambda: deque(maxlen=HISTORY), repr=False
    )
    """The last recorded state changes: ``(time, state, reason)``."""
    _state: HealthState = HealthState.STARTING
    _last: HealthState = HealthState.STARTING
    _sampled: int = 0
    _rate: float = 0.0
    _mark: tuple[float, int] | None = None
    _changed: float = field(default_factory=time.time)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def delivered_now(self) -> None:
        """Record one delivery (called on the delivery path: one counter bump)."""
        self.delivered.bump()

    def sample(self, now: float) -> None:
        """Note ``now`` as the last delivery if deliveries were counted since the last sample.

        The delivery path only bumps a counter; the time of the last delivery is known to the
        precision of whoever samples (the prober every interval, and each health read).
        """
        count = self.delivered.value
        if count != self._sampled:
            self._sampled = count
            self.last_delivery = now
        mark = self._mark
        if mark is None or now < mark[0]:
            self._mark = (now, count)
        elif now - mark[0] >= RATE_WINDOW:
            self._rate = (count - mark[1]) / (now - mark[0])
            self._mark = (now, count)

    @property
    def rate(self) -> float:
        """Deliveries per second between the last two samples at least ``RATE_WINDOW`` apart."""
        return self._rate

    def failed_now(self, exc: BaseException) -> None:
        """Record one handler failure."""
        self.errors.bump()
        self.last_error = f"{type(exc).__name__}: {exc}"

    def set(self, state: HealthState, reason: str | None = None) -> None:
        """Record ``state`` (a start, a stop, a stall or recovery seen by the prober)."""
        with self._lock:
            if state is not self._state:
                self.history.append((time.time(), state.value, reason))
                if state is HealthState.STALLED:
                    self.stalls.bump()
            self._state = state
            if reason is not None:
                self.last_error = reason

    @property
    def current(self) -> HealthState:
        """The state last recorded with :meth:`set` (before deriving from activity)."""
        return self._state

    def state(
        self, *, idle_after: float, link_up: bool | None, now: float | None = None
    ) -> HealthState:
        """The state now: the recorded one, refined by liveness, probes, link and activity."""
        now = time.time() if now is None else now
        self.sample(now)
        base = self._state
        derived: HealthState
        if base in (HealthState.STARTING, HealthState.FAILED):
            derived = base
        elif (self.alive is not None and not self.alive()) or (
            self.overdue is not None and self.overdue(now)
        ):
            derived = HealthState.STALLED
        elif base in (HealthState.STALLED, HealthState.RECOVERING):
            derived = base  # until a probe gets through again
        elif link_up is False:
            derived = HealthState.RECOVERING
        elif self.last_delivery is not None and now - self.last_delivery <= idle_after:
            derived = HealthState.ACTIVE
        else:
            derived = HealthState.IDLE
        with self._lock:
            if derived is not self._last:
                self._last = derived
                self._changed = now
        return derived

    def snapshot(self, *, idle_after: float, link_up: bool | None) -> dict[str, Any]:
        """A JSON-safe record of this subscription for ``/health``."""
        state = self.state(idle_after=idle_after, link_up=link_up)
        backlog: int | None = None
        if self.backlog is not None:
            try:
                backlog = self.backlog()
            except Exception as exc:  # a broker that cannot answer now
                backlog = None
                self.last_error = f"backlog unavailable: {type(exc).__name__}: {exc}"
        return {
            "name": self.name,
            "kind": self.kind,
            "target": self.target,
            "group": self.group,
            "required": self.required,
            "state": state.value,
            "since": self._changed,
            "last_delivery": self.last_delivery,
            "delivered": self.delivered.value,
            "rate": round(self._rate, 3),
            "errors": self.errors.value,
            "resubscribed": self.resubscribed.value,
            "stalls": self.stalls.value,
            "last_error": self.last_error,
            "backlog": backlog,
            "probes": self.probes() if self.probes is not None else None,
            "history": [
                {"time": t, "state": state, "reason": reason} for t, state, reason in self.history
            ],
        }


def health_report(
    name: str,
    trackers: list[Tracker],
    *,
    queue_stats: dict[str, Any],
    idle_after: float,
    running: bool,
    live: bool,
) -> dict[str, Any]:
    """The ``/health`` document: every subscription, readiness and the reasons against it."""
    link = link_state(queue_stats.get("transport", {}))
    subs = [t.snapshot(idle_after=idle_after, link_up=link) for t in trackers]
    reasons = unready(subs) if running else [f"service {name!r} is not running"]
    return {
        "service": name,
        "status": "ready" if not reasons else "unready",
        "live": live,
        "reasons": reasons,
        "link_up": link,
        "subscriptions": subs,
        "queue": {k: v for k, v in queue_stats.items() if k != "transport"},
    }


def unready(subscriptions: list[dict[str, Any]]) -> list[str]:
    return [
        f"{s['kind']} {s['name']} on {s['target']!r} is {s['state']}"
        + (f" ({s['last_error']})" if s["last_error"] else "")
        for s in subscriptions
        if s["required"] and s["state"] not in (HealthState.ACTIVE.value, HealthState.IDLE.value)
    ]
