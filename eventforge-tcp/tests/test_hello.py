"""The hello: token auth, TLS (and mutual TLS), secrets kept out of every text."""

from __future__ import annotations

import logging

import pytest
from eventforge.message import Message
from eventforge.testing.certs import Certificates, certificates_available, make_certificates
from eventforge.testing.conformance import Collector
from eventforge_tcp.errors import AuthenticationError
from eventforge_tcp.transport import TCPClientTransport, TCPServerTransport, from_url

from .helpers import wait_until

SECRET = "s3cr3t-token-value"


def test_right_token_connects_and_exchanges() -> None:
    srv = TCPServerTransport("127.0.0.1", 0, token=SECRET).start()
    try:
        client = TCPClientTransport("127.0.0.1", srv.port, token=SECRET).connect()
        got = Collector()
        srv.subscribe("authed", got)
        client.send(Message("authed", 1))
        assert got.wait_for_count(1, 5.0)
        client.close()
    finally:
        srv.close()


@pytest.mark.parametrize("given", [None, "wrong-token", SECRET + "x"])
def test_wrong_token_fails_fast_without_leaking_or_retrying(
    given: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    srv = TCPServerTransport("127.0.0.1", 0, token=SECRET).start()
    try:
        client = TCPClientTransport("127.0.0.1", srv.port, token=given)
        with pytest.raises(AuthenticationError, match="authorization violation") as info:
            client.connect()
        text = f"{info.value} {info.value!r} {client!r} {srv!r} {caplog.text}"
        assert SECRET not in text
        if given:
            assert given not in text
        assert srv.stats()["auth_failures"] == 1
        assert srv.stats()["connections_accepted"] == 1, "the client retried a refused token"
        assert "token=***" in repr(srv)
    finally:
        srv.close()


def test_token_change_on_server_restart_stops_the_client_for_good() -> None:
    """After a reconnect refused for auth, the client gives up (no storm) and says why on send."""
    srv = TCPServerTransport("127.0.0.1", 0, token=SECRET).start()
    port = srv.port
    client = TCPClientTransport("127.0.0.1", port, token=SECRET, reconnect_delay=0.01).connect()
    srv.close()
    srv = TCPServerTransport("127.0.0.1", port, token="rotated-token").start()
    try:
        assert wait_until(lambda: client.stats()["auth_failed"])
        with pytest.raises(AuthenticationError):
            client.send(Message("x", 1))
        accepted = srv.stats()["connections_accepted"]
        assert not wait_until(lambda: srv.stats()["connections_accepted"] > accepted, 0.3), (
            "the client kept retrying a refused token"
        )
        assert srv.stats()["auth_failures"] == 1
    finally:
        client.close()
        srv.close()


def test_url_carries_the_token_and_repr_hides_it() -> None:
    srv = from_url(f"tcp://:{SECRET}@127.0.0.1:0?listen=1")
    assert isinstance(srv, TCPServerTransport)
    try:
        client = from_url(f"tcp://:{SECRET}@127.0.0.1:{srv.port}")
        assert SECRET not in repr(client)
        client.close()
    finally:
        srv.close()


# -- TLS ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl."""
    if not certificates_available():
        pytest.skip("neither trustme nor openssl is installed")
    return make_certificates(tmp_path_factory.mktemp("pki"))


def test_tls_round_trip(pki: Certificates) -> None:
    srv = TCPServerTransport("127.0.0.1", 0, ssl_context=pki.server_context()).start()
    try:
        a = TCPClientTransport("127.0.0.1", srv.port, ssl_context=pki.client_context()).connect()
        b = TCPClientTransport("127.0.0.1", srv.port, ssl_context=pki.client_context()).connect()
        got = Collector()
        b.subscribe("secure.*", got)
        for n in range(200):
            a.send(Message("secure.data", {"n": n, "blob": "y" * 500}))
        assert got.wait_for_count(200, 10.0)
        assert [m.payload["n"] for m in got.messages] == list(range(200))
        assert a.url.startswith("tcps://")
        a.close()
        b.close()
    finally:
        srv.close()


def test_mutual_tls_requires_a_client_certificate(pki: Certificates) -> None:
    srv = TCPServerTransport("127.0.0.1", 0, ssl_context=pki.server_context(mutual=True)).start()
    try:
        ok = TCPClientTransport(
            "127.0.0.1", srv.port, ssl_context=pki.client_context(cert=True)
        ).connect()
        ok.close()
        anonymous = TCPClientTransport(
            "127.0.0.1", srv.port, ssl_context=pki.client_context(), reconnect=False
        )
        from eventforge.errors import TransportError

        with pytest.raises(TransportError, match=r"TLS|closed|hello"):
            anonymous.connect()
    finally:
        srv.close()


def test_plain_client_against_tls_server_fails_clearly(pki: Certificates) -> None:
    srv = TCPServerTransport(
        "127.0.0.1", 0, ssl_context=pki.server_context(), hello_timeout=0.5
    ).start()
    try:
        from eventforge.errors import TransportError

        with pytest.raises(TransportError, match=r"hello|TLS|closed"):
            TCPClientTransport("127.0.0.1", srv.port, connect_timeout=2.0).connect()
    finally:
        srv.close()
