"""What eventforge declares on a RabbitMQ broker, and how topics map onto it.

* Topics become routing keys unchanged; a subscription pattern becomes a binding key with
  eventforge's ``*`` (one segment) as AMQP's ``*`` and ``**`` (zero or more segments) as ``#``.
* Plain subscriptions get an exclusive, auto-delete queue of their own (named after the
  transport, so it can be declared again after a reconnect); ``group=`` subscriptions share a
  durable queue named after the exchange, the group and the pattern (competing consumers).
* Every declaration is idempotent. One that conflicts with what exists (another exchange type,
  other queue arguments) fails with :class:`TopologyConflictError`, which quotes the broker's
  reason (it names the argument that differs) and says what to do.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from eventforge.errors import ConfigurationError

__all__ = [
    "REPLY_TO",
    "TopologyConflictError",
    "binding_key",
    "conflict_error",
    "group_queue_name",
    "is_reply_address",
    "valid_name",
]

REPLY_TO = "amq.rabbitmq.reply-to"
_REPLY_PREFIX = REPLY_TO + "."
_MAX_NAME = 255
# The characters AMQP 0-9-1 allows in exchange and queue names.
_NAME_CHARS = re.compile(r"[a-zA-Z0-9_.:@#,/+-]+")
_NOT_NAME_CHAR = re.compile(r"[^a-zA-Z0-9_.:@#,/+-]")


class TopologyConflictError(ConfigurationError):
    """A declaration conflicts with an existing exchange or queue of the same name."""


def binding_key(pattern: str) -> str:
    """The AMQP binding key of an eventforge pattern (``**`` → ``#``; ``*`` stays ``*``)."""
    return ".".join("#" if part == "**" else part for part in pattern.split("."))


def valid_name(name: str) -> bool:
    """Tell whether ``name`` may name an AMQP exchange or queue."""
    return len(name) <= _MAX_NAME and _NAME_CHARS.fullmatch(name) is not None


def is_reply_address(topic: str) -> bool:
    """Tell whether ``topic`` is a direct reply-to address (replies go to the default exchange)."""
    return topic.startswith(_REPLY_PREFIX)


def group_queue_name(exchange: str, group: str, pattern: str) -> str:
    """The durable queue a group shares for ``pattern``.

    AMQP queue names allow letters, digits and ``-_.:@#,/+`` only, up to 255 bytes: a name with
    a wildcard or another character is spelled with ``**`` → ``#``, ``*`` → ``+``, anything
    else → ``_``, and a hash of the exact name is added so that two spellings never meet.
    """
    name = f"{exchange}.group.{group}.{pattern}"
    if _NAME_CHARS.fullmatch(name) and len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    spelled = _NOT_NAME_CHAR.sub("_", name.replace("**", "#").replace("*", "+"))
    return f"{spelled[: _MAX_NAME - 17]}.{digest}"


def conflict_error(kind: str, name: str, exc: BaseException, arguments: Any) -> Exception:
    """Turn a broker's PRECONDITION_FAILED on a declaration into an error that says what to do."""
    reason = exc.args[-1] if exc.args else str(exc)
    if isinstance(reason, bytes):
        reason = reason.decode(errors="replace")
    return TopologyConflictError(
        f"the broker refused to declare {kind} {name!r} with {arguments}: {reason}. Another "
        f"{kind} of that name exists with other settings; delete it (rabbitmqctl delete_{kind} "
        f"{name}) if nothing needs it, or choose another name",
        key=kind,
    )
