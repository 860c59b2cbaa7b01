"""Routing beyond topics: header matching on subscriptions, and what to do with unroutable messages.

Header matching (``queue.subscribe(topic, fn, match={"format": "pdf"}, match_mode="all")``) is
applied by the subscribing queue to each message its transport delivers, so it works the same on
every transport; messages that do not match are counted in ``stats["filtered"]``. The transport
still carries them to the subscriber: matching is subscriber-side, not broker-side.

An *unroutable* message is one that no subscriber received. ``MessageQueue(unroutable=...)``
picks the policy applied to ``publish``: ``"drop"`` (count it in ``stats["unroutable"]``),
``"return"`` (raise :class:`UnroutableError` in the publisher), ``"reroute:<topic>"`` (publish it
again on ``<topic>``, with the original topic in the ``ef-unroutable-topic`` header), or a
callable ``fn(message)``. Only a transport that can count receivers (one with a
``send_counted(message) -> int | None`` method) lets the queue know; on others the policy cannot
apply and the queue says so once in the log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from eventforge.errors import ConfigurationError, UnroutableError
from eventforge.message import Message
from eventforge.topics import validate_topic

__all__ = [
    "REROUTED_FROM_HEADER",
    "UnroutableError",
    "check_match",
    "header_gate",
    "unroutable_sender",
]

log = logging.getLogger("eventforge.routing")

REROUTED_FROM_HEADER = "ef-unroutable-topic"

Invoker = Callable[[Message], None]
Bump = Callable[[], int]


# -- header matching -----------------------------------------------------------------------


def check_match(match: Mapping[str, Any], mode: str) -> dict[str, Any]:
    """Validate a header match up front; return it as a dict."""
    if mode not in ("all", "any"):
        raise ValueError(f"match_mode must be 'all' or 'any', got {mode!r}")
    if not isinstance(match, Mapping) or not match:
        raise ValueError(f"match must be a non-empty dict of header values, got {match!r}")
    for key, value in match.items():
        if not isinstance(key, str):
            raise TypeError(f"match keys are header names (str), got {key!r}")
        if not isinstance(value, (str, int, float, bool)):
            raise TypeError(
                f"match value of {key!r} is a {type(value).__name__}; header values are str, "
                "int, float or bool"
            )
    return dict(match)


def header_gate(match: Mapping[str, Any], mode: str, invoke: Invoker, filtered: Bump) -> Invoker:
    """Return an invoker that passes on only messages whose headers match.

    ``mode="all"``: every key must be present with an equal value; ``"any"``: at least one.
    """
    wanted = tuple(check_match(match, mode).items())
    missing = object()

    if mode == "all":

        def gate_all(message: Message) -> None:
            headers = message.headers
            for key, value in wanted:
                if headers.get(key, missing) != value:
                    filtered()
                    return
            invoke(message)

        return gate_all

    def gate_any(message: Message) -> None:
        headers = message.headers
        for key, value in wanted:
            if headers.get(key, missing) == value:
                invoke(message)
                return
        filtered()

    return gate_any


# -- unroutable messages -----------------------------------------------------------------------


def _policy(policy: str | Callable[[Message], Any]) -> tuple[str, str | None]:
    if callable(policy):
        return "callback", None
    if policy in ("drop", "return"):
        return policy, None
    if isinstance(policy, str) and policy.startswith("reroute:"):
        topic = policy[len("reroute:") :]
        try:
            return "reroute", validate_topic(topic)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"unroutable policy {policy!r}: {exc}", key="unroutable"
            ) from None
    raise ConfigurationError(
        f"unroutable policy must be 'drop', 'return', 'reroute:<topic>' or a callable, got "
        f"{policy!r}",
        key="unroutable",
    )


def unroutable_sender(
    transport: Any,
    policy: str | Callable[[Message], Any],
    unroutable: Bump,
) -> Callable[[Message], None] | None:
    """The send function that applies ``policy``; ``None`` when the transport cannot tell.

    ``transport.send_counted(message)`` must return how many subscribers took the message, or
    ``None`` when it cannot know.
    """
    kind, target = _policy(policy)
    counted = transport.send_counted if transport.counts_receivers() else None
    if counted is None:
        log.warning(
            "the %s transport cannot tell whether anyone received a message; the unroutable "
            "policy %r has no effect on it",
            getattr(transport, "name", type(transport).__name__),
            policy,
        )
        return None
    send = transport.send

    def send_routed(message: Message) -> None:
        taken = counted(message)
        if taken is None or taken > 0:
            return
        unroutable()
        if kind == "drop":
            return
        if kind == "return":
            raise UnroutableError(message)
        if kind == "callback":
            assert callable(policy)
            policy(message)
            return
        assert target is not None
        if message.topic == target:
            log.warning("message %s is unroutable on its reroute topic %r too", message.id, target)
            return
        rerouted = message.copy(topic=target)
        rerouted.headers[REROUTED_FROM_HEADER] = message.topic
        send(rerouted)

    return send_routed
