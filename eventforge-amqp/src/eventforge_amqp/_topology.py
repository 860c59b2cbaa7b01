"""What eventforge declares on a RabbitMQ broker, and how topics map onto it.

* Topics become routing keys unchanged; a subscription pattern becomes a binding key with
  eventforge's ``*`` (one segment) as AMQP's ``*`` and ``**`` (zero or more segments) as ``#``.
* Three exchange kinds, as RabbitMQ has them: ``topic`` (routing by pattern), ``fanout`` (every
  bound queue gets every message) and ``headers`` (the broker matches message headers against
  the binding's ``x-match`` all/any arguments). Which one a topic uses is decided by
  :mod:`eventforge_amqp._exchanges`.
* Plain subscriptions get an exclusive, auto-delete queue of their own (named after the
  transport, so it can be declared again after a reconnect); ``group=`` subscriptions share a
  durable queue named after the exchange, the group and the pattern (competing consumers).
* Every declaration is idempotent. One that conflicts with what exists (another exchange type,
  other queue arguments) fails with :class:`TopologyConflictError`, which names what differs
  and says what to do.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from eventforge.errors import ConfigurationError
from eventforge.topics import validate_pattern

__all__ = [
    "EXCHANGE_KINDS",
    "REPLY_TO",
    "TopologyConflictError",
    "binding_key",
    "conflict_error",
    "covers",
    "exchange_kind",
    "group_queue_name",
    "header_arguments",
    "is_reply_address",
    "routes_option",
    "valid_name",
]

REPLY_TO = "amq.rabbitmq.reply-to"
_REPLY_PREFIX = REPLY_TO + "."
_MAX_NAME = 255
EXCHANGE_KINDS = ("topic", "fanout", "headers")
# The characters AMQP 0-9-1 allows in exchange and queue names.
_NAME_CHARS = re.compile(r"[a-zA-Z0-9_.:@#,/+-]+")
_NOT_NAME_CHAR = re.compile(r"[^a-zA-Z0-9_.:@#,/+-]")

# "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'x' in vhost '/': received
# 'fanout' but current is 'topic'"
_INEQUIVALENT = re.compile(
    r"inequivalent arg '(?P<arg>[^']+)' for \w+ '.*' in vhost '.*': "
    r"received (?P<received>.+?) but current is (?P<current>.+)$"
)


class TopologyConflictError(ConfigurationError):
    """A declaration conflicts with an existing exchange or queue of the same name."""


def binding_key(pattern: str) -> str:
    """The AMQP binding key of an eventforge pattern (``**`` → ``#``; ``*`` stays ``*``)."""
    return ".".join("#" if part == "**" else part for part in pattern.split("."))


def covers(route: str, pattern: str) -> bool:
    """Tell whether every topic ``pattern`` matches is also matched by ``route``.

    ``covers("alerts.**", "alerts.*.disk")`` is true; ``covers("alerts.*", "alerts.**")`` is
    not (``alerts.**`` also matches ``alerts`` and ``alerts.a.b``).
    """
    return _covers(tuple(route.split(".")), tuple(pattern.split(".")))


def _covers(route: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    if not route:
        return not pattern
    head = route[0]
    if head == "**":
        # ``**`` takes no segment here, or absorbs the pattern's next one (whatever it is).
        return _covers(route[1:], pattern) or (bool(pattern) and _covers(route, pattern[1:]))
    if not pattern or pattern[0] == "**":
        return False  # only ``**`` covers a variable number of segments
    if head == "*":
        return _covers(route[1:], pattern[1:])
    return pattern[0] == head and _covers(route[1:], pattern[1:])


def exchange_kind(value: Any) -> str:
    """An exchange kind (``topic``, ``fanout`` or ``headers``) or ``ValueError``."""
    if value not in EXCHANGE_KINDS:
        raise ValueError(f"expected one of {', '.join(EXCHANGE_KINDS)}, got {value!r}")
    return str(value)


def routes_option(value: Any) -> tuple[tuple[str, str], ...]:
    """Topic pattern → exchange kind, from ``"alerts.**=fanout,reports.**=headers"``, a mapping
    or pairs; the first route whose pattern matches a topic wins."""
    if isinstance(value, str):
        pairs: list[tuple[Any, Any]] = []
        for item in filter(None, (part.strip() for part in value.split(","))):
            pattern, sep, kind = item.rpartition("=")
            if not sep:
                raise ValueError(f"a route is pattern=kind (as in alerts.**=fanout), got {item!r}")
            pairs.append((pattern.strip(), kind.strip()))
    elif isinstance(value, Mapping):
        pairs = list(value.items())
    else:
        pairs = [tuple(pair) for pair in value]
    routes: list[tuple[str, str]] = []
    for pattern, kind in pairs:
        if not isinstance(pattern, str):
            raise TypeError(f"a route's pattern is a str, got {pattern!r}")
        validate_pattern(pattern)
        routes.append((pattern, exchange_kind(kind)))
    return tuple(routes)


def header_arguments(match: Mapping[str, Any] | None, mode: str) -> dict[str, Any]:
    """The binding arguments of a headers-exchange subscription.

    ``x-match`` is ``all`` or ``any``; when a header to match starts with ``x-`` (which the
    broker otherwise ignores) it is ``all-with-x`` / ``any-with-x`` (RabbitMQ 3.10 and later).
    """
    match = dict(match or {})
    with_x = any(key.lower().startswith("x-") for key in match)
    arguments: dict[str, Any] = {"x-match": f"{mode}-with-x" if with_x else mode}
    arguments.update(match)
    return arguments


def valid_name(name: str) -> bool:
    """Tell whether ``name`` may name an AMQP exchange or queue."""
    return len(name) <= _MAX_NAME and _NAME_CHARS.fullmatch(name) is not None


def is_reply_address(topic: str) -> bool:
    """Tell whether ``topic`` is a direct reply-to address (replies go to the default exchange)."""
    return topic.startswith(_REPLY_PREFIX)


def group_queue_name(
    exchange: str, group: str, pattern: str, arguments: Mapping[str, Any] | None = None
) -> str:
    """The durable queue a group shares for ``pattern``.

    A headers-exchange group with binding ``arguments`` gets a queue per distinct match, so
    two matches never share one queue (and each other's messages). AMQP queue names allow
    letters, digits and ``-_.:@#,/+`` only, up to 255 bytes: a name with a wildcard or another
    character is spelled with ``**`` → ``#``, ``*`` → ``+``, anything else → ``_``, and a
    hash of the exact name is added so that two spellings never meet.
    """
    name = f"{exchange}.group.{group}.{pattern}"
    if arguments:
        canonical = json.dumps(sorted(arguments.items()), default=str)
        name += "." + hashlib.sha256(canonical.encode()).hexdigest()[:12]
    if _NAME_CHARS.fullmatch(name) and len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    spelled = _NOT_NAME_CHAR.sub("_", name.replace("**", "#").replace("*", "+"))
    return f"{spelled[: _MAX_NAME - 17]}.{digest}"


def _reason(exc: BaseException) -> str:
    reason = exc.args[-1] if exc.args else str(exc)
    if isinstance(reason, bytes):
        reason = reason.decode(errors="replace")
    return str(reason)


def conflict_error(
    kind: str, name: str, exc: BaseException, arguments: Any, *, rename: str | None = None
) -> TopologyConflictError:
    """Turn a broker's PRECONDITION_FAILED on a declaration into an error that says what to do.

    ``rename`` says how to pick another name (for example the option that names an exchange).
    """
    reason = _reason(exc)
    found = _INEQUIVALENT.search(reason)
    if found is not None:
        differs = (
            f"its {found['arg']!r} differs (the broker has {found['current']}, eventforge "
            f"declares {found['received']}; all it declares: {arguments})"
        )
    else:
        differs = f"eventforge declares it with {arguments} (the broker said: {reason})"
    if kind == "exchange":
        delete = f"rabbitmqadmin delete exchange name={name}, or the management UI"
    else:
        delete = f"rabbitmqctl delete_queue {name}; its messages are lost"
    return TopologyConflictError(
        f"{kind} {name!r} already exists on the broker with other settings: {differs}. "
        f"Delete the old {kind} if nothing needs it ({delete}), "
        f"or {rename or 'choose another name'}",
        key=kind,
    )
