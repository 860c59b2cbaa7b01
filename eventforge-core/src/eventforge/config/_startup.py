"""Startup policies: what a process does before it starts its work (from ``Settings.startup``).

``"none"``, ``"delay:<seconds>"``, ``{"policy": "barrier", "requires": {"worker": 3},
"timeout": 30}`` and a list of them (run in order: a chain). A barrier announces and waits
through the queue's rendezvous (:meth:`MessageQueue.announce_ready` and
:meth:`MessageQueue.wait_until_ready`), so it works over any transport.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from eventforge.errors import ConfigurationError

__all__ = [
    "Barrier",
    "FixedDelay",
    "NoWait",
    "PolicyChain",
    "ReadyQueue",
    "StartupPolicy",
    "startup_policy",
]


class ReadyQueue(Protocol):
    """What a startup policy needs of a queue (a :class:`~eventforge.queue.MessageQueue`)."""

    def announce_ready(self, roles: Sequence[str], *, space: str = "default") -> None: ...

    def wait_until_ready(
        self, requirements: dict[str, int], timeout: float = 30.0, *, space: str = "default"
    ) -> bool: ...


class StartupPolicy(ABC):
    """What a process does at startup before it starts its work."""

    @abstractmethod
    def run(self, queue: ReadyQueue) -> bool:
        """Run the policy on ``queue``; return whether startup may go on."""


class NoWait(StartupPolicy):
    """Start at once."""

    def run(self, queue: ReadyQueue) -> bool:
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

    def run(self, queue: ReadyQueue) -> bool:
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

    def run(self, queue: ReadyQueue) -> bool:
        if self.roles:
            queue.announce_ready(self.roles, space=self.space)
        if self.requires:
            return queue.wait_until_ready(self.requires, self.timeout, space=self.space)
        return True

    def __repr__(self) -> str:
        return f"Barrier(requires={self.requires}, roles={self.roles}, timeout={self.timeout})"


class PolicyChain(StartupPolicy):
    """Run policies in order; stop at the first that returns ``False``."""

    def __init__(self, policies: Sequence[StartupPolicy]) -> None:
        self.policies = list(policies)

    def run(self, queue: ReadyQueue) -> bool:
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
