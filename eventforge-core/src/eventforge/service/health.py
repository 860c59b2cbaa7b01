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
    the transport reports that its link is down and is reconnecting;
``stalled``
    a work-queue consumer whose threads have stopped although the service is running;
``failed``
    subscribing failed, the service stopped it, or its transport is closed.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eventforge.transport import Counter

__all__ = ["HealthState", "Tracker", "link_state"]


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
    last_delivery: float | None = None
    last_error: str | None = None
    backlog: Callable[[], int | None] | None = field(default=None, repr=False)
    alive: Callable[[], bool] | None = field(default=None, repr=False)
    _state: HealthState = HealthState.STARTING
    _changed: float = field(default_factory=time.time)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def delivered_now(self) -> None:
        """Record one delivery (called on the delivery path: keep it cheap)."""
        self.delivered.bump()
        self.last_delivery = time.time()

    def failed_now(self, exc: BaseException) -> None:
        """Record one handler failure."""
        self.errors.bump()
        self.last_error = f"{type(exc).__name__}: {exc}"

    def set(self, state: HealthState, reason: str | None = None) -> None:
        """Move to ``state`` (a start, a stop, a failure to subscribe)."""
        with self._lock:
            if state is not self._state:
                self._state = state
                self._changed = time.time()
            if reason is not None:
                self.last_error = reason

    def state(
        self, *, idle_after: float, link_up: bool | None, now: float | None = None
    ) -> HealthState:
        """The state now, derived from the recorded one, the link and the last delivery."""
        now = time.time() if now is None else now
        with self._lock:
            base = self._state
        derived: HealthState
        if base in (HealthState.STARTING, HealthState.FAILED):
            derived = base
        elif self.alive is not None and not self.alive():
            derived = HealthState.STALLED
        elif link_up is False:
            derived = HealthState.RECOVERING
        elif self.last_delivery is not None and now - self.last_delivery <= idle_after:
            derived = HealthState.ACTIVE
        else:
            derived = HealthState.IDLE
        with self._lock:
            if derived is not self._state and base not in (
                HealthState.STARTING,
                HealthState.FAILED,
            ):
                self._state = derived
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
            "errors": self.errors.value,
            "last_error": self.last_error,
            "backlog": backlog,
        }
