"""Payload fidelity: what a transport delivers is what was sent, value and type.

Part of :class:`~eventforge.testing.conformance.TransportConformance` (its
``test_json_values_arrive_unchanged`` and ``test_bytes_payload_arrives_as_bytes``) and of
:class:`~eventforge.testing.queue_conformance.QueueConformance` (its
``test_bytes_request_and_reply``). A network
transport that went through a lossy text encoding would turn ``1.0`` into ``1``, ``True`` into
``1`` or ``b"\\x00"`` into ``"\\x00"``; these checks compare types as well as values, so a
transport passes only if a subscriber can rely on the payload it gets.
"""

from __future__ import annotations

from typing import Any

from eventforge.message import Message
from eventforge.testing._transport_harness import PROBE_KEY, TransportHarness
from eventforge.transport import Capability

__all__ = ["BYTES_PAYLOADS", "JSON_PAYLOADS", "typed"]

JSON_PAYLOADS: list[Any] = [
    {"order": {"id": 7, "lines": [1, 2.5, "x", None, True, False], "empty": {}, "none": None}},
    [],
    "",
    "unicode ✓ ünïcødé 🚀",
    0,
    -1,
    2**53,
    1.0,
    0.1,
    True,
    False,
    None,
]
"""Every JSON type, nested and at the top, with the values a lossy encoding would change."""

BYTES_PAYLOADS: list[bytes] = [b"\xff\x00raw\x01", b"", bytes(range(256))]
"""Bytes that are not valid UTF-8, empty, and every byte value."""


def typed(value: Any) -> Any:
    """``value`` with its type at every level, so ``1 == 1.0 == True`` no longer compare equal."""
    if isinstance(value, dict):
        return ("dict", sorted((k, typed(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("list", [typed(v) for v in value])
    return (type(value).__name__, value)


def _round_trip(suite: TransportHarness, name: str, payloads: list[Any]) -> list[Any]:
    t = suite.new_transport()
    topic = suite.topic(f"fidelity.{name}")
    _, got = suite.subscribe(t, topic)
    suite.sync(t, topic, got)
    for payload in payloads:
        t.send(Message(topic, payload))
    assert got.wait_for_count(len(payloads), suite.delivery_timeout), (
        f"{len(got.messages)} of {len(payloads)} messages arrived"
    )
    received = got.payloads()
    if Capability.ORDERED not in t.capabilities:
        return sorted(received, key=repr)
    return received


def check_json_values_arrive_unchanged(self: TransportHarness) -> None:
    """JSON values of every type arrive equal and with the same types (1.0 stays a float)."""
    received = _round_trip(self, "json", JSON_PAYLOADS)
    t = self.new_transport()
    sent = (
        JSON_PAYLOADS if Capability.ORDERED in t.capabilities else sorted(JSON_PAYLOADS, key=repr)
    )
    assert [typed(p) for p in received] == [typed(p) for p in sent]


def check_bytes_payload_arrives_as_bytes(self: TransportHarness) -> None:
    """A bytes payload arrives as the same bytes (not as text), whatever the serializer."""
    received = _round_trip(self, "bytes", BYTES_PAYLOADS)
    t = self.new_transport()
    sent = (
        BYTES_PAYLOADS if Capability.ORDERED in t.capabilities else sorted(BYTES_PAYLOADS, key=repr)
    )
    assert [type(p) for p in received] == [bytes] * len(sent), [type(p) for p in received]
    assert received == sent


def check_bytes_request_and_reply(self: Any) -> None:
    """A bytes request reaches the responder as bytes, and its bytes reply comes back as bytes."""
    requester, responder = self.new_queue(), self.new_queue()
    topic = self.topic("bytes.reverse")
    seen: list[Any] = []

    def reverse(message: Message) -> None:
        payload = message.payload
        if isinstance(payload, dict) and PROBE_KEY in payload:
            responder.reply(message, "probe")
            return
        seen.append(payload)
        responder.reply(message, payload[::-1])

    responder.subscribe(topic, reverse)
    self.wait_for_responder(requester, topic)
    reply = requester.request(topic, b"\x00\x01\xfe\xff", timeout=self.delivery_timeout)
    assert reply is not None, "no reply"
    assert seen == [b"\x00\x01\xfe\xff"]
    assert type(seen[0]) is bytes
    assert reply.payload == b"\xff\xfe\x01\x00"
    assert type(reply.payload) is bytes
