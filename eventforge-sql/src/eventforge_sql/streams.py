"""EventFlow's Redis Streams entries, read as eventforge messages.

EventFlow producers write each event as one stream entry in one of two forms, and both are
accepted unchanged:

- one ``data`` field holding the event as JSON:
  ``XADD my-events * data '{"event_id": "e-1", "event_type": "OrderCreated", "payload": {...}}'``
- the event's fields flattened into the entry: ``XADD my-events * event_id e-1 event_type
  OrderCreated payload '{"order_id": "o-123"}'`` (a ``payload`` or ``metadata`` field holding
  JSON is decoded; without ``payload`` the remaining fields are the payload).

The message id is the ``event_id`` (the inbox's idempotency key); ``event_type``,
``aggregate_id``, ``correlation_id`` and ``occurred_on`` become headers, as does the entry id
(``stream_id``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from eventforge.message import Message

__all__ = ["EVENTFLOW_HEADERS", "InvalidStreamEntry", "event_from_stream_entry"]

EVENTFLOW_HEADERS = ("event_type", "aggregate_id", "correlation_id", "occurred_on")


class InvalidStreamEntry(ValueError):
    """A stream entry that is not an EventFlow event (no JSON object, no ``event_id``)."""


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)


def event_from_stream_entry(
    fields: Mapping[Any, Any], stream: str, entry_id: Any = None
) -> Message:
    """Read one stream entry (either EventFlow form) as a message whose id is its event id.

    Raises :class:`InvalidStreamEntry` saying what is wrong with the entry.
    """
    entry = {_text(k): _text(v) for k, v in fields.items()}
    where = f"stream {stream!r} entry {_text(entry_id) if entry_id is not None else '?'}"
    if "data" in entry:
        try:
            event = json.loads(entry["data"])
        except ValueError as exc:
            raise InvalidStreamEntry(f"{where}: its 'data' field is not JSON ({exc})") from None
        if not isinstance(event, dict):
            raise InvalidStreamEntry(f"{where}: its 'data' field is not a JSON object")
    else:
        event = dict(entry)
        for key in ("payload", "metadata"):
            raw = event.get(key)
            if isinstance(raw, str):
                try:
                    event[key] = json.loads(raw)
                except ValueError:
                    pass  # a plain string payload stays a string
    event_id = event.get("event_id")
    if event_id is None or str(event_id) == "":
        raise InvalidStreamEntry(
            f"{where} has no event_id: an EventFlow event needs one (the inbox's idempotency "
            "key); fix the producer"
        )
    headers: dict[str, Any] = {}
    for key in EVENTFLOW_HEADERS:
        if event.get(key) is not None:
            headers[key] = str(event[key])
    if entry_id is not None:
        headers["stream_id"] = _text(entry_id)
    if "payload" in event:
        payload = event["payload"]
    else:
        payload = {
            k: v for k, v in event.items() if k not in ("event_id", "data", *EVENTFLOW_HEADERS)
        }
    return Message(stream, payload, headers, id=str(event_id))
