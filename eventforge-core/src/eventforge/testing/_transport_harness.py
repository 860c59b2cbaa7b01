"""The machinery of the transport conformance suite: fixtures, helpers and the override guard.

:mod:`eventforge.testing.conformance` holds the contract tests themselves; this module holds
what they stand on, so that both read on their own.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, TypeVar

import pytest

from eventforge.message import Message
from eventforge.transport import Capability, Transport

__all__ = [
    "PROBE_KEY",
    "Collector",
    "ContractGuard",
    "TransportFactory",
    "TransportHarness",
    "is_probe",
    "seal_contract",
]

TransportFactory = Callable[[], Transport]
"""What ``make_transport`` returns: every call gives a transport on the shared space of a test."""

F = TypeVar("F", bound=Callable[..., Any])

PROBE_KEY = "eventforge_conformance_probe"
_OVERRIDE_ATTR = "__conformance_override__"


def is_probe(message: Message) -> bool:
    payload = message.payload
    return isinstance(payload, dict) and PROBE_KEY in payload


class Collector:
    """A subscription callback that records what it receives, thread-safely.

    Probe messages sent by :meth:`TransportConformance.sync` are counted apart and never appear
    in :attr:`messages`, so a late probe cannot disturb what a test asserts.
    """

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.probes = 0
        self._cond = threading.Condition()

    def __call__(self, message: Message) -> None:
        with self._cond:
            if is_probe(message):
                self.probes += 1
            else:
                self.messages.append(message)
            self._cond.notify_all()

    def payloads(self) -> list[Any]:
        """Return the payloads received so far, in arrival order."""
        with self._cond:
            return [m.payload for m in self.messages]

    def wait_for(self, predicate: Callable[[Collector], bool], timeout: float) -> bool:
        """Wait until ``predicate(self)`` holds; return whether it did before ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def wait_for_count(self, count: int, timeout: float) -> bool:
        """Wait until at least ``count`` non-probe messages arrived."""
        return self.wait_for(lambda c: len(c.messages) >= count, timeout)

    def __len__(self) -> int:
        with self._cond:
            return len(self.messages)


class ContractGuard:
    """Refuses, at class creation, a subclass that silently redefines a contract test.

    A suite seals its tests with :func:`seal_contract`. Afterwards a subclass may redefine one
    of them only deliberately: decorated ``@pytest.mark.xfail(reason=...)`` or
    ``@<Suite>.overrides(reason=...)``.
    """

    _contract: ClassVar[dict[str, str]] = {}
    """Sealed test name -> the name of the suite class that defines it."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        contract: dict[str, str] = {}
        for base in reversed(cls.__mro__[1:]):
            contract.update(vars(base).get("_contract", {}))
        for name, value in vars(cls).items():
            owner = contract.get(name)
            if owner is None or _deliberate_override(value):
                continue
            raise TypeError(
                f"{cls.__qualname__}.{name} overrides the conformance test of the same name, "
                f"which would silently replace part of the {owner} contract. If the "
                "implementation really cannot meet it, mark the override with "
                f"@pytest.mark.xfail(reason='why') or @{owner}.overrides(reason='why'); to add "
                "a test of your own, give it another name"
            )

    @staticmethod
    def overrides(name: str | None = None, *, reason: str) -> Callable[[F], F]:
        """Mark a method as a deliberate replacement of the contract test it is named after.

        ``reason`` (required, non-empty) says why the implementation differs; when ``name`` is
        given it must equal the decorated method's name, so a typo cannot hide an override.
        """
        if not isinstance(reason, str) or not reason.strip():
            raise TypeError("overrides(...) needs a non-empty reason='...'")

        def mark(func: F) -> F:
            if name is not None and name != func.__name__:
                raise TypeError(
                    f"@overrides({name!r}) decorates {func.__name__!r}; the names must match"
                )
            setattr(func, _OVERRIDE_ATTR, reason)
            return func

        return mark


def seal_contract(suite: type[ContractGuard]) -> frozenset[str]:
    """Make every ``test_*`` method of ``suite`` part of its contract; return their names.

    That includes the tests ``suite`` inherits, so a suite may be composed of one class per
    area of its contract.
    """
    names = frozenset(
        name for klass in suite.__mro__ for name in vars(klass) if name.startswith("test_")
    )
    suite._contract = dict.fromkeys(names, suite.__name__)
    return names


class TransportHarness(ContractGuard):
    """The fixtures and helpers that the transport contract tests stand on.

    Every transport a test gets from :meth:`new_transport` is closed when the test ends; every
    topic it builds with :meth:`topic` lies under a prefix unique to the test.
    """

    delivery_timeout: ClassVar[float] = 5.0
    probe_interval: ClassVar[float] = 0.05
    absence_timeout: ClassVar[float] = 0.2
    """How long a receive that must come back empty may wait (never asserted as a duration)."""

    # -- fixtures --------------------------------------------------------------------------

    @pytest.fixture
    def make_transport(self) -> TransportFactory:
        """Return a factory of transports sharing one space. Subclasses must provide it."""
        pytest.fail(
            f"{type(self).__name__} must define a 'make_transport' fixture returning a "
            "zero-argument factory of transports that share one space (see "
            "eventforge.testing.conformance)"
        )

    @pytest.fixture
    def make_independent_transport(self) -> TransportFactory | None:
        """Return a factory of transports that share NOTHING with ``make_transport``'s, or None.

        Provide it to run the isolation test (two independent instances never see each other's
        messages); by default the test is skipped.
        """
        return None

    @pytest.fixture
    def topic_prefix(self) -> str:
        """A topic prefix unique to this test, so tests on one broker never cross-talk."""
        return f"conformance.t{os.urandom(6).hex()}"

    @pytest.fixture(autouse=True)
    def _conformance_space(
        self,
        make_transport: TransportFactory,
        make_independent_transport: TransportFactory | None,
        topic_prefix: str,
    ) -> Iterator[None]:
        self._factory = make_transport
        self._independent_factory = make_independent_transport
        self._prefix = topic_prefix
        self._made: list[Transport] = []
        yield
        seen: set[int] = set()
        errors: list[str] = []
        for transport in reversed(self._made):
            if id(transport) in seen:
                continue
            seen.add(id(transport))
            try:
                transport.close()
            except Exception as exc:  # reported below: close must be idempotent and quiet
                errors.append(f"{transport!r}: {type(exc).__name__}: {exc}")
        if errors:
            pytest.fail("close() raised at teardown: " + "; ".join(errors))

    # -- helpers ---------------------------------------------------------------------------

    def new_transport(self) -> Transport:
        """Return a transport from ``make_transport``; it is closed when the test ends."""
        transport = self._factory()
        if not isinstance(transport, Transport):
            pytest.fail(f"make_transport() returned {transport!r}, not a Transport")
        self._made.append(transport)
        return transport

    def new_independent_transport(self) -> Transport:
        """Return a transport from ``make_independent_transport`` (skip when there is none)."""
        if self._independent_factory is None:
            pytest.skip("no make_independent_transport fixture: isolation is not tested")
        transport = self._independent_factory()
        self._made.append(transport)
        return transport

    def topic(self, suffix: str) -> str:
        """Return ``suffix`` under this test's unique prefix (``suffix`` may hold wildcards)."""
        return f"{self._prefix}.{suffix}"

    def require(self, transport: Transport, capability: str) -> None:
        """Skip the test unless ``transport`` declares ``capability``."""
        if capability not in transport.capabilities:
            pytest.skip(
                f"{type(transport).__name__} does not declare the {capability!r} capability"
            )

    def wait_for(self, predicate: Callable[[], bool], timeout: float | None = None) -> bool:
        """Poll ``predicate`` until it holds; return whether it did within ``timeout``."""
        deadline = time.monotonic() + (self.delivery_timeout if timeout is None else timeout)
        delay = 0.001
        while True:
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return predicate()
            time.sleep(delay)
            delay = min(delay * 2, 0.02)

    def publish_until(
        self,
        transport: Transport,
        make_message: Callable[[int], Message],
        done: Callable[[], bool],
        timeout: float | None = None,
    ) -> int:
        """Send ``make_message(n)`` for n = 0, 1, ... until ``done()``; return how many were sent.

        Subscriptions on a broker take effect asynchronously, so a first message may be lost;
        resending every ``probe_interval`` avoids both lost first messages and blind sleeps.
        Fails the test when ``done()`` does not hold within ``timeout``.
        """
        limit = self.delivery_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        sent = 0
        while True:
            transport.send(make_message(sent))
            sent += 1
            if self.wait_for(done, min(self.probe_interval, max(0.0, deadline - time.monotonic()))):
                return sent
            if time.monotonic() >= deadline:
                pytest.fail(f"nothing arrived within {limit}s after {sent} sends")

    def sync(self, transport: Transport, topic: str, *collectors: Collector) -> None:
        """Send probes to ``topic`` until every collector has seen one: the subscriptions are live."""
        self.publish_until(
            transport,
            lambda n: Message(topic, {PROBE_KEY: n}),
            lambda: all(c.probes > 0 for c in collectors),
        )

    def subscribe(
        self, transport: Transport, pattern: str, *, group: str | None = None
    ) -> tuple[str, Collector]:
        """Subscribe a new :class:`Collector` to ``pattern``; return the id and the collector."""
        collector = Collector()
        if group is None:
            sub_id = transport.subscribe(pattern, collector)
        else:
            sub_id = transport.subscribe(pattern, collector, group=group)
        return sub_id, collector

    def assert_payload_equal(self, transport: Transport, sent: Any, received: Any) -> None:
        """Zero-copy transports hand over the very object; the others an equal JSON value."""
        if Capability.ZERO_COPY in transport.capabilities:
            assert received is sent, "a ZERO_COPY transport must pass the payload by reference"
        else:
            assert received == sent
            assert type(received) is type(sent)


def _deliberate_override(value: Any) -> bool:
    func = getattr(value, "__func__", value)
    if getattr(func, _OVERRIDE_ATTR, None):
        return True
    for mark in getattr(func, "pytestmark", ()):
        if getattr(mark, "name", None) == "xfail" and mark.kwargs.get("reason"):
            return True
    return False
