"""Options: one table per side, read the same from a URL's query and from keywords.

``eventforge.connect("tcp://...")`` builds a client, or with ``listen=1`` a server; every
option means the same in a URL and as a keyword, and a bad one is refused by name.
"""

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


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("tcp://127.0.0.1:1?bogus=1", "unknown tcp option 'bogus' in URL"),
        ("tcp://127.0.0.1:1?connect_timeout=soon", "connect_timeout='soon' in URL .* invalid"),
        ("tcps://127.0.0.1:0?listen=1", "cert"),
        ("http://127.0.0.1:1", "expected 'tcp://' or 'tcps://'"),
        ("tcp://127.0.0.1:1?listen=maybe", "listen='maybe'"),
        ("tcp://127.0.0.1:1?max_connections=5", "not a tcp client option .*add listen=1"),
        ("tcp://127.0.0.1:0?listen=1&reconnect=0", "not a tcp server option .*drop listen=1"),
        ("tcp://127.0.0.1:1?ca=/ca.pem", "use tcps://"),
        ("tcp://127.0.0.1:1?heartbeat_interval=1&heartbeat_interval=2", "given twice"),
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
    with pytest.raises(ConfigurationError, match="token"):
        TCPClientTransport(token="")
    with pytest.raises(ConfigurationError, match="unknown tcp client option 'max_connections'"):
        TCPClientTransport(max_connections=3)
    with pytest.raises(ConfigurationError, match="ssl_context"):
        TCPServerTransport(ssl_context="cert.pem")
    with pytest.raises(ConfigurationError, match="port"):
        TCPClientTransport(port=0)


def test_a_url_and_keywords_spell_options_the_same_way() -> None:
    """Booleans read 1/true/yes/on and 0/false/no/off everywhere; numbers convert alike."""
    srv = from_url("tcp://127.0.0.1:0?listen=on&trusted=yes&max_pending=7&hello_timeout=1.5")
    try:
        assert isinstance(srv, TCPServerTransport)
        assert (srv.trusted, srv.max_pending, srv.hello_timeout) == (True, 7, 1.5)
        by_keywords = TCPServerTransport(trusted="on", max_pending="7", hello_timeout="1.5")
        assert (by_keywords.trusted, by_keywords.max_pending, by_keywords.hello_timeout) == (
            True,
            7,
            1.5,
        )
        client = from_url(f"tcp://127.0.0.1:{srv.port}?reconnect=off&offline=raise")
        assert isinstance(client, TCPClientTransport)
        try:
            assert (client.reconnect, client.offline) == (False, "raise")
        finally:
            client.close()
        assert TCPClientTransport(reconnect="no").reconnect is False
    finally:
        srv.close()


def test_keywords_win_over_the_url_and_the_password_is_the_token() -> None:
    srv = TCPServerTransport("127.0.0.1", 0, token="s3cr3t").start()
    try:
        client = from_url(
            f"tcp://:s3cr3t@127.0.0.1:{srv.port}?client_name=url&connect_timeout=9",
            client_name="keyword",
        )
        assert isinstance(client, TCPClientTransport)
        try:
            assert client.connected
            assert (client.client_name, client.connect_timeout) == ("keyword", 9.0)
        finally:
            client.close()
    finally:
        srv.close()
