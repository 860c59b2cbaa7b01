"""End-to-end probes: prove that each subscription's delivery path still delivers.

Every ``interval`` seconds the prober publishes one small message per probed subscription to a
private topic (``_eventforge.probe.<service>.<instance>.<n>``) that a companion subscription,
made on the same queue and transport, receives: it proves the connection, reader and delivery
machinery the subscription shares with the transport's other subscriptions. What only the
subscription has, its registration at the queue, the transport and the broker, and its own
handler thread, is checked in the same round (:class:`~eventforge.service._paths.PathCheck`).

A probe not received within ``timeout`` seconds, or a path check that finds the subscription
gone, marks it ``stalled``; the prober then re-establishes it (unsubscribe, subscribe again),
counts it, and the subscription is ``recovering`` until a probe gets through and its path is
whole again. A stall that subscribing again cannot mend (a handler that is stuck, messages the
broker dropped before the transport re-made the subscription) is reported ``stalled`` until
the next round finds the path whole.

User topics never see probe traffic. Work-queue consumers are checked differently: their
threads must be alive and their backend must answer.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eventforge.message import Message
from eventforge.queue import MessageQueue
from eventforge.service._handlers import PROBE_PREFIX
from eventforge.service._paths import PathCheck
from eventforge.service.health import HealthState, Tracker
from eventforge.transport import Counter, nonblocking

__all__ = ["PROBE_PREFIX", "Check", "Probe", "Prober"]

log = logging.getLogger("eventforge.service.probe")


@dataclass
class Probe:
    """One probed subscription: its tracker, the companion subscription and the last probe."""

    tracker: Tracker
    topic: str
    options: dict[str, Any]
    resubscribe: Callable[[], None]
    path: PathCheck | None = None
    handler_id: str | None = None
    sent: int = 0
    seen: int = 0
    sent_at: float = 0.0
    seen_at: float | None = None
    stalls: Counter = field(default_factory=Counter)
    lost: Counter = field(default_factory=Counter)


@dataclass
class Check:
    """A broker-side check of one work-queue consumer: ``check()`` raises when it is broken."""

    tracker: Tracker
    check: Callable[[], object]
    reestablish: Callable[[], None]
    failures: Counter = field(default_factory=Counter)


class Prober:
    """Send probes on a thread of its own and judge each subscription by them."""

    def __init__(
        self, queue: MessageQueue, service: str, *, interval: float, timeout: float
    ) -> None:
        if interval <= 0 or timeout <= 0:
            raise ValueError("probe interval and timeout must be > 0 seconds")
        self.queue = queue
        self.interval = interval
        self.timeout = timeout
        self.instance = f"{service}.p{os.getpid()}x{os.urandom(3).hex()}"
        self.probes: list[Probe] = []
        self.checks: list[Check] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(
        self,
        tracker: Tracker,
        options: dict[str, Any],
        resubscribe: Callable[[], None],
        path: PathCheck | None = None,
    ) -> Probe:
        """Probe ``tracker``'s path; ``resubscribe()`` re-establishes the user subscription;
        ``path`` checks what only that subscription has, in the same round."""
        topic = f"{PROBE_PREFIX}.{self.instance}.s{len(self.probes)}"
        probe = Probe(tracker, topic, options, resubscribe, path)
        self._subscribe(probe)
        tracker.overdue = lambda now: self.overdue(probe, now)
        tracker.probes = lambda: {
            "sent": probe.sent,
            "seen": probe.seen,
            "lost": probe.lost.value,
            "stalls": probe.stalls.value,
        }
        self.probes.append(probe)
        return probe

    def add_check(
        self, tracker: Tracker, check: Callable[[], object], reestablish: Callable[[], None]
    ) -> Check:
        """Run ``check()`` every interval; when it raises, ``reestablish()`` the consumer."""
        entry = Check(tracker, check, reestablish)
        self.checks.append(entry)
        return entry

    def _subscribe(self, probe: Probe) -> None:
        @nonblocking
        def received(message: Message) -> None:
            number = message.payload
            if isinstance(number, int) and number > probe.seen:
                probe.seen = number
                probe.seen_at = time.time()

        probe.handler_id = self.queue.subscribe(probe.topic, received, **probe.options)

    def start(self) -> None:
        """Start probing (the first probe goes out at once)."""
        self._thread = threading.Thread(
            target=self._run, name=f"eventforge-probe-{self.instance}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop probing and remove the companion subscriptions."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for probe in self.probes:
            if probe.handler_id is not None and not self.queue.closed:
                self.queue.unsubscribe(probe.handler_id)
            probe.handler_id = None

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.time()
            for probe in self.probes:
                probe.tracker.sample(now)
                self.check(probe)
            for entry in self.checks:
                entry.tracker.sample(now)
                self.verify(entry)
            self._stop.wait(self.interval)

    def verify(self, entry: Check) -> None:
        """Run one broker-side check; re-establish the consumer when it fails."""
        tracker = entry.tracker
        try:
            entry.check()
        except Exception as exc:
            entry.failures.bump()
            reason = f"broker-side check failed: {type(exc).__name__}: {exc}"
            if tracker.current is not HealthState.STALLED:
                log.warning(
                    "consumer %s of %r is stalled (%s); re-establishing it",
                    tracker.name,
                    tracker.target,
                    reason,
                )
            tracker.set(HealthState.STALLED, reason)
            try:
                entry.reestablish()
            except Exception as again:
                tracker.last_error = f"re-establishing failed: {again}"
                return
            tracker.set(HealthState.RECOVERING)
            return
        if tracker.current in (HealthState.STALLED, HealthState.RECOVERING):
            log.info("consumer %s of %r consumes again", tracker.name, tracker.target)
            tracker.set(HealthState.IDLE)

    def overdue(self, probe: Probe, now: float) -> bool:
        """Whether the last probe sent to ``probe`` is late (it counts from the send attempt)."""
        return probe.sent > probe.seen and now - probe.sent_at > self.timeout

    def check(self, probe: Probe, now: float | None = None) -> None:
        """Judge the last probe and the subscription's own path, re-establish a stalled
        subscription, send the next probe."""
        now = time.time() if now is None else now
        overdue = self.overdue(probe, now)
        tracker = probe.tracker
        problem, mendable = (None, False) if overdue else self._judge_path(probe, now)
        if overdue:
            probe.lost.bump()
            self._stalled(probe, f"probe not received within {self.timeout} s")
            self._reestablish(probe)
        elif problem is not None:
            self._stalled(probe, problem)
            if mendable:
                self._reestablish(probe, companion=False)
        elif probe.sent and probe.seen >= probe.sent:
            if tracker.current in (HealthState.STALLED, HealthState.RECOVERING):
                log.info("subscription %s on %r delivers again", tracker.name, tracker.target)
            tracker.set(HealthState.IDLE)
        if overdue or probe.seen >= probe.sent:
            self._send(probe, now)

    def _judge_path(self, probe: Probe, now: float) -> tuple[str | None, bool]:
        if probe.path is None:
            return None, False
        try:
            return probe.path.judge(now)
        except Exception as exc:  # the broker cannot answer now
            return f"its state could not be read: {type(exc).__name__}: {exc}", False

    def _stalled(self, probe: Probe, reason: str) -> None:
        tracker = probe.tracker
        if tracker.current is not HealthState.STALLED:
            probe.stalls.bump()
            log.warning(
                "subscription %s on %r is stalled: %s; re-establishing it where that helps",
                tracker.name,
                tracker.target,
                reason,
            )
        tracker.set(HealthState.STALLED, reason)

    def _reestablish(self, probe: Probe, *, companion: bool = True) -> None:
        try:
            if companion and probe.handler_id is not None:
                self.queue.unsubscribe(probe.handler_id)
                probe.handler_id = None
            probe.resubscribe()
            if companion:
                self._subscribe(probe)
        except Exception as exc:
            probe.tracker.set(HealthState.STALLED, f"re-establishing failed: {exc}")
            log.warning("re-establishing %s failed: %s", probe.tracker.name, exc)
            return
        probe.tracker.set(HealthState.RECOVERING)

    def _send(self, probe: Probe, now: float) -> None:
        # Counted before publishing: a publish that blocks (a paused broker) is late as well.
        probe.sent += 1
        probe.sent_at = now
        try:
            self.queue.publish(probe.topic, probe.sent)
        except Exception as exc:
            probe.tracker.last_error = f"probe publish failed: {exc}"
