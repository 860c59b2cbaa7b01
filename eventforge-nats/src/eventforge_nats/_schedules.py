"""Delayed items on JetStream: message schedules (ADR-51, nats-server 2.12 or later).

A delayed item is stored as a *schedule*: the item's envelope on its own subject
``<queue subject>.due.<message id>`` with the headers ``Nats-Schedule: @at <due time>`` and
``Nats-Schedule-Target: <queue subject>``. The server keeps it in the queue's stream (file
storage, so it survives a restart) and, when its clock reaches the due time, publishes the body
to the queue's subject as a new message and purges the schedule. The queue's consumer filters
on the queue's subject only, so it never sees a schedule, only the item it becomes.

The stream needs ``allow_msg_schedules`` and the ``.due.*`` subjects: a new stream is created
with both when the server can keep schedules, and a stream made before (by an older eventforge)
is updated on its first delayed put. A server older than 2.12 does not know the setting and
silently drops it, so the stream's configuration is read back: a delayed put to a stream that
did not take it is refused with :class:`~eventforge.errors.UnsupportedCapabilityError`, before
anything is stored (the item would otherwise wait forever).
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from eventforge.errors import UnsupportedCapabilityError

if TYPE_CHECKING:
    from nats.js.client import JetStreamContext

__all__ = [
    "SCHEDULES_SINCE",
    "due_subjects",
    "schedule_headers",
    "schedules_known_missing",
    "stream_schedules",
]

SCHEDULES_SINCE = (2, 12)
"""The first nats-server release that keeps message schedules."""

_SAFE = re.compile(r"[A-Za-z0-9_-]+")


def due_subjects(subject: str) -> str:
    """The stream subjects that hold the schedules of the queue on ``subject``."""
    return f"{subject}.due.*"


def schedule_headers(subject: str, msg_id: str, due: float) -> tuple[str, dict[str, str]]:
    """The subject and headers of the schedule that delivers an item to ``subject`` at ``due``.

    One subject per item (a subject holds one schedule): the message id when it is a plain
    token, else a digest of it. ``Nats-Msg-Id`` still makes a retried put a duplicate.
    """
    token = msg_id if _SAFE.fullmatch(msg_id) else hashlib.sha1(msg_id.encode()).hexdigest()
    at = datetime.fromtimestamp(due, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    headers = {
        "Nats-Msg-Id": msg_id,
        "Nats-Schedule": f"@at {at}",
        "Nats-Schedule-Target": subject,
    }
    return f"{subject}.due.{token}", headers


def schedules_known_missing(version: Any) -> bool:
    """Tell whether a server of nats-py's ``ServerVersion`` surely cannot keep schedules
    (an unknown version, ``0.0.0``, is left to the stream's configuration to tell)."""
    major, minor = int(version.major or 0), int(version.minor or 0)
    return (major, minor) != (0, 0) and (major, minor) < SCHEDULES_SINCE


async def stream_schedules(js: JetStreamContext, stream: str, subject: str, version: Any) -> None:
    """Make ``stream`` keep the schedules of the queue on ``subject``: update its configuration
    when it lacks them, and refuse when the server did not take the update."""
    info = await js.stream_info(stream)
    config = info.config
    wanted = due_subjects(subject)
    if config.allow_msg_schedules and wanted in (config.subjects or []):
        return
    config.allow_msg_schedules = True
    config.subjects = [*(config.subjects or [subject]), wanted]
    config.subjects = list(dict.fromkeys(config.subjects))
    updated = await js.update_stream(config)
    if not updated.config.allow_msg_schedules:
        raise UnsupportedCapabilityError(
            f"the JetStream stream {stream!r} cannot keep a delayed item: nats-server "
            f"{version} does not know message schedules (they need nats-server "
            f"{SCHEDULES_SINCE[0]}.{SCHEDULES_SINCE[1]} or later); upgrade the server, or put "
            "the item without a delay, or keep delayed items in a Redis, AMQP, SQL or local:// "
            "work queue",
            transport="nats",
            capability="delays",
        )
