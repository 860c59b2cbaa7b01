"""Rendezvous: processes tell each other they are ready, over any transport.

A participant announces the roles it is ready in (``queue.announce_ready(["worker"])``); a
coordinator waits until enough distinct participants announced each role
(``queue.wait_until_ready({"worker": 3}, timeout=30)``). Everything travels as ordinary
messages on the reserved topic ``_rendezvous.<space>``:

- ``{"op": "ready", "id": ..., "roles": [...]}``: sent on announcing, and again whenever asked;
- ``{"op": "query", "id": ...}``: "who is there?", sent by a waiting coordinator, repeated every
  ``query_interval`` seconds while it waits, so participants that started earlier (or whose
  subscription became live later) are counted too;
- ``{"op": "gone", "id": ...}``: sent by :meth:`Rendezvous.leave`.

Every participant has a unique id, so a participant that answers many queries is counted once.

Startup policies (:func:`startup_policy`) wrap this for configuration: ``"none"``,
``"delay:<seconds>"``, ``{"policy": "barrier", "requires": {"worker": 3}, "timeout": 30}`` and a
list of them (run in order: a chain).
"""

from __future__ import annotations

import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError
from .message import Message, new_id
from .topics import validate_topic

if TYPE_CHECKING:
    from .queue import MessageQueue

__all__ = [
    "RENDEZVOUS_TOPIC_PREFIX",
    "Barrier",
    "FixedDelay",
    "NoWait",
    "PolicyChain",
    "Rendezvous",
    "StartupPolicy",
    "rendezvous_for",
    "startup_policy",
]

RENDEZVOUS_TOPIC_PREFIX = "_rendezvous"


class Rendezvous:
    """One participant (and observer) of the rendezvous ``space`` on a queue."""

    query_interval = 0.2

    def __init__(self, queue: MessageQueue, space: str = "default") -> None:
        self.queue = queue
        self.space = space
        self.topic = validate_topic(f"{RENDEZVOUS_TOPIC_PREFIX}.{space}")
        self.id = new_id()
        self.roles: frozenset[str] = frozenset()
        self._seen: dict[str, frozenset[str]] = {}
        self._cond = threading.Condition()
        self._handler_id: str | None = None

    def _ensure_subscribed(self) -> None:
        with self._cond:
            if self._handler_id is None:
                self._handler_id = self.queue.subscribe(self.topic, self._on_message)

    def _on_message(self, message: Message) -> None:
        body = message.payload
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            return
        op = body.get("op")
        if op == "query":
            if self.roles:
                self._announce()
            return
        with self._cond:
            if op == "ready" and isinstance(body.get("roles"), list):
                self._seen[body["id"]] = frozenset(r for r in body["roles"] if isinstance(r, str))
            elif op == "gone":
                self._seen.pop(body["id"], None)
            self._cond.notify_all()

    def _announce(self) -> None:
        self.queue.publish(self.topic, {"op": "ready", "id": self.id, "roles": sorted(self.roles)})

    def announce_ready(self, roles: Iterable[str]) -> None:
        """Announce this participant as ready in ``roles`` (added to earlier ones)."""
        roles = [roles] if isinstance(roles, str) else list(roles)
        if not roles or not all(isinstance(r, str) and r for r in roles):
            raise ValueError(f"roles must be non-empty strings, got {roles!r}")
        self._ensure_subscribed()
        self.roles = self.roles | frozenset(roles)
        self._announce()

    def counts(self) -> dict[str, int]:
        """How many distinct participants announced each role so far."""
        with self._cond:
            return self._counts()

    def _counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for roles in self._seen.values():
            for role in roles:
                counts[role] = counts.get(role, 0) + 1
        return counts

    def wait_until_ready(self, requirements: Mapping[str, int], timeout: float = 30.0) -> bool:
        """Wait until each role in ``requirements`` has that many participants; ``False`` on timeout."""
        if not requirements or not all(
            isinstance(k, str) and isinstance(v, int) and v >= 0 for k, v in requirements.items()
        ):
            raise ValueError(
                f"requirements must map role names to counts, e.g. {{'worker': 3}}; got "
                f"{requirements!r}"
            )
        self._ensure_subscribed()
        deadline = time.monotonic() + timeout

        def satisfied() -> bool:
            counts = self._counts()
            return all(counts.get(role, 0) >= n for role, n in requirements.items())

        while True:
            with self._cond:
                if satisfied():
                    return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.queue.publish(self.topic, {"op": "query", "id": self.id})
            with self._cond:
                if self._cond.wait_for(satisfied, min(self.query_interval, remaining)):
                    return True

    def leave(self) -> None:
        """Withdraw this participant's announcement and stop listening."""
        with self._cond:
            handler_id, self._handler_id = self._handler_id, None
        if self.roles and not self.queue.closed:
            self.queue.publish(self.topic, {"op": "gone", "id": self.id})
        self.roles = frozenset()
        if handler_id is not None and not self.queue.closed:
            self.queue.unsubscribe(handler_id)


_by_queue_lock = threading.Lock()
_SPACES_ATTR = "_eventforge_rendezvous"


def rendezvous_for(queue: MessageQueue, space: str = "default") -> Rendezvous:
    """The queue's participant in ``space`` (one per queue and space).

    The participants are kept on the queue itself: a registry keyed by queue would keep every
    queue alive (each participant refers to its queue).
    """
    with _by_queue_lock:
        spaces: dict[str, Rendezvous] | None = getattr(queue, _SPACES_ATTR, None)
        if spaces is None:
            spaces = {}
            setattr(queue, _SPACES_ATTR, spaces)
        found = spaces.get(space)
        if found is None:
            found = spaces[space] = Rendezvous(queue, space)
        return found


# -- startup policies ---------------------------------------------------------------------------


class StartupPolicy(ABC):
    """What a process does at startup before it starts its work."""

    @abstractmethod
    def run(self, queue: MessageQueue) -> bool:
        """Run the policy on ``queue``; return whether startup may go on."""


class NoWait(StartupPolicy):
    """Start at once."""

    def run(self, queue: MessageQueue) -> bool:
        return True

    def __repr__(self) -> str:
        return "NoWait()"


class FixedDelay(StartupPolicy):
    """Wait a fixed number of seconds (for peers that need a moment, when nothing announces)."""

    def __init__(self, seconds: float) -> None:
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, (int, float))
            or not math.isfinite(seconds)
            or seconds < 0
        ):
            raise ConfigurationError(
                f"delay must be a finite number of seconds >= 0, got {seconds!r}", key="delay"
            )
        self.seconds = float(seconds)

    def run(self, queue: MessageQueue) -> bool:
        time.sleep(self.seconds)
        return True

    def __repr__(self) -> str:
        return f"FixedDelay({self.seconds})"


class Barrier(StartupPolicy):
    """Announce ``roles`` (if any), then wait until ``requires`` participants are ready."""

    def __init__(
        self,
        requires: Mapping[str, int] | None = None,
        timeout: float = 30.0,
        roles: Sequence[str] = (),
        space: str = "default",
    ) -> None:
        if requires is not None and not (
            isinstance(requires, Mapping)
            and all(isinstance(k, str) and type(v) is int and v >= 0 for k, v in requires.items())
        ):
            raise ConfigurationError(
                f"a barrier's 'requires' maps role names to counts, e.g. {{'worker': 3}}; got "
                f"{requires!r}",
                key="startup",
            )
        if isinstance(roles, str) or not all(isinstance(r, str) and r for r in roles):
            raise ConfigurationError(
                f"a barrier's 'roles' is a list of role names, e.g. ['worker']; got {roles!r}",
                key="startup",
            )
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
            raise ConfigurationError(
                f"a barrier's 'timeout' is a number of seconds >= 0; got {timeout!r}",
                key="startup",
            )
        if not isinstance(space, str) or not space:
            raise ConfigurationError(
                f"a barrier's 'space' is a non-empty name; got {space!r}", key="startup"
            )
        self.requires = dict(requires or {})
        self.timeout = float(timeout)
        self.roles = list(roles)
        self.space = space
        if not self.requires and not self.roles:
            raise ConfigurationError(
                "a barrier needs 'requires' (roles to wait for) and/or 'roles' (to announce)",
                key="startup",
            )

    def run(self, queue: MessageQueue) -> bool:
        party = rendezvous_for(queue, self.space)
        if self.roles:
            party.announce_ready(self.roles)
        if self.requires:
            return party.wait_until_ready(self.requires, self.timeout)
        return True

    def __repr__(self) -> str:
        return f"Barrier(requires={self.requires}, roles={self.roles}, timeout={self.timeout})"


class PolicyChain(StartupPolicy):
    """Run policies in order; stop at the first that returns ``False``."""

    def __init__(self, policies: Sequence[StartupPolicy]) -> None:
        self.policies = list(policies)

    def run(self, queue: MessageQueue) -> bool:
        return all(policy.run(queue) for policy in self.policies)

    def __repr__(self) -> str:
        return f"PolicyChain({self.policies})"


_NAMES = ("none", "delay", "barrier", "chain")


def startup_policy(spec: Any) -> StartupPolicy:
    """Build a startup policy from configuration.

    ``"none"``; ``"delay:1.5"`` or ``{"policy": "delay", "seconds": 1.5}``;
    ``{"policy": "barrier", "requires": {"worker": 3}, "roles": [...], "timeout": 30}``;
    a list of those, or ``{"policy": "chain", "steps": [...]}``, is a chain.
    """
    if isinstance(spec, StartupPolicy):
        return spec
    if isinstance(spec, (list, tuple)):
        return PolicyChain([startup_policy(item) for item in spec])
    if isinstance(spec, str):
        name, _, arg = spec.partition(":")
        if name == "none" and not arg:
            return NoWait()
        if name == "delay" and arg:
            try:
                seconds = float(arg)
            except ValueError:
                pass
            else:
                return FixedDelay(seconds)
        raise ConfigurationError(
            f"startup policy {spec!r} is not valid; use 'none', 'delay:<seconds>', a barrier "
            "dict ({'policy': 'barrier', 'requires': {'worker': 3}}) or a list of these",
            key="startup",
        )
    if isinstance(spec, Mapping):
        options = dict(spec)
        name = options.pop("policy", None)
        try:
            if name == "none":
                return NoWait(**options)
            if name == "delay":
                return FixedDelay(**options)
            if name == "barrier":
                return Barrier(**options)
            if name == "chain":
                steps = options.pop("steps", None)
                if options or not isinstance(steps, (list, tuple)):
                    raise ConfigurationError(
                        "a chain is {'policy': 'chain', 'steps': [...]} (or just a list); got "
                        f"{spec!r}",
                        key="startup",
                    )
                return PolicyChain([startup_policy(item) for item in steps])
        except TypeError as exc:
            raise ConfigurationError(f"startup policy {name!r}: {exc}", key="startup") from None
        raise ConfigurationError(
            f"unknown startup policy {name!r}; choose one of {', '.join(_NAMES)}", key="startup"
        )
    raise ConfigurationError(
        f"startup policy must be a name, a dict or a list, got {type(spec).__name__}",
        key="startup",
    )
