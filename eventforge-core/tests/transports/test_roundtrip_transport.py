"""roundtrip://: the memory transport with every message through the serializer.

It passes the Transport conformance suite with each serializer, and delivers what a network
transport would (a tuple as a list, a datetime as text) instead of the object that was sent.
"""

from __future__ import annotations

import datetime

import eventforge
import pytest
from eventforge import Message, MessageQueue
from eventforge.errors import ConfigurationError, SerializationError
from eventforge.testing.conformance import TransportConformance, TransportFactory
from eventforge.transports.roundtrip import RoundTripTransport


class TestRoundTripJsonConformance(TransportConformance):
    @pytest.fixture
    def make_transport(self) -> TransportFactory:
        transport = RoundTripTransport(serializer="json")
        return lambda: transport


class TestRoundTripMsgpackConformance(TransportConformance):
    @pytest.fixture
    def make_transport(self) -> TransportFactory:
        pytest.importorskip("msgpack")
        transport = RoundTripTransport(serializer="msgpack")
        return lambda: transport


def _delivered(url: str, payload: object) -> object:
    queue = MessageQueue(transport=eventforge.connect(url))
    got: list[object] = []
    queue.subscribe("a.b", lambda m: got.append(m.payload))
    queue.publish("a.b", payload)
    queue.close()
    return got[0]


def test_payload_arrives_as_a_network_transport_would_deliver_it() -> None:
    sent = {"pair": (1, 2), "when": datetime.datetime(2026, 1, 2, 3, 4, 5)}
    assert _delivered("memory://", sent) is sent  # the plain memory transport: the same object
    assert _delivered("roundtrip://", sent) == {"pair": [1, 2], "when": "2026-01-02T03:04:05"}


def test_msgpack_keeps_nested_bytes() -> None:
    pytest.importorskip("msgpack")
    sent = {"content": b"\xff\x00raw", "name": "a.bin"}
    assert _delivered("roundtrip://?serializer=msgpack", sent) == sent


def test_unencodable_payload_fails_at_send_as_on_the_network() -> None:
    transport = RoundTripTransport()
    with pytest.raises(SerializationError, match="cannot be encoded as JSON"):
        transport.send(Message("a.b", {"handle": object()}))
    transport.close()


def test_bad_url_names_the_option() -> None:
    with pytest.raises(ConfigurationError, match="serialiser"):
        eventforge.connect("roundtrip://?serialiser=json")
    with pytest.raises(ConfigurationError, match="no host or path"):
        eventforge.connect("roundtrip://somehost")
