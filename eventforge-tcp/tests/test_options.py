"""URLs and the registry: eventforge.connect("tcp://..."), listen=1, options, the seed import path."""

from __future__ import annotations

import eventforge
import pytest
from eventforge.errors import ConfigurationError
from eventforge.message import Message
from eventforge.testing.conformance import Collector
from eventforge_tcp.transport import TCPClientTransport, TCPServerTransport, from_url


def test_connect_builds_a_listening_server_and_a_connected_client() -> None:
    srv = eventforge.connect("tcp://127.0.0.1:0?listen=1&max_connections=5")
    assert isinstance(srv, TCPServerTransport)
    assert srv.port != 0
    assert srv.max_connections == 5
    try:
        client = eventforge.connect(f"tcp://127.0.0.1:{srv.port}?client_name=probe")
        assert isinstance(client, TCPClientTransport)
        assert client.connected
        got = Collector()
        srv.subscribe("via.url", got)
        client.send(Message("via.url", 1))
        assert got.wait_for_count(1, 5.0)
        client.close()
    finally:
        srv.close()


def test_seed_import_path_resolves_through_the_registry() -> None:
    from eventforge.transports.tcp import TCPClientTransport as Client
    from eventforge.transports.tcp import TCPServerTransport as Server

    assert Client is TCPClientTransport
    assert Server is TCPServerTransport
    entry = eventforge.registry().transport("tcps://host:1")
    assert entry.spec.name == "tcp"


def test_seed_transport_snippet_runs_with_a_free_port() -> None:
    """The seed's 'swap the transport' lines, on a free port instead of 9090."""
    from eventforge import MessageQueue
    from eventforge.transports.tcp import TCPServerTransport

    local = MessageQueue()
    transport = TCPServerTransport(host="127.0.0.1", port=0)
    transport.start()
    networked = MessageQueue(transport=transport)
    got = Collector()
    networked.subscribe("seed.tcp", got)
    networked.publish("seed.tcp", {"ok": True})
    assert got.wait_for_count(1, 5.0)
    networked.close()
    local.close()


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("tcp://127.0.0.1:1?bogus=1", "unknown tcp option 'bogus' in URL"),
        ("tcp://127.0.0.1:1?connect_timeout=soon", "connect_timeout='soon' in URL .* invalid"),
        ("tcps://127.0.0.1:0?listen=1", "cert"),
        ("http://127.0.0.1:1", "expected 'tcp://' or 'tcps://'"),
    ],
)
def test_bad_urls_fail_with_the_key(url: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        from_url(url)


def test_bad_options_fail_at_construction() -> None:
    with pytest.raises(ConfigurationError, match="offline"):
        TCPClientTransport(offline="sometimes")
    with pytest.raises(ConfigurationError, match="max_send_buffer"):
        TCPServerTransport(max_frame_size=4096, max_send_buffer=1024)
    with pytest.raises(ConfigurationError, match="port"):
        TCPServerTransport(port=70000)
