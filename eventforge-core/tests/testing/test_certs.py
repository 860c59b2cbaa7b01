"""eventforge.testing.certs makes chains that strict verification (Python 3.13's default) accepts.

Each maker (trustme, openssl) is checked by a real TLS handshake over loopback, server and
mutual, with ``ssl.VERIFY_X509_STRICT`` set on both sides whatever this Python's default is.
"""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest
from eventforge.testing.certs import (
    Certificates,
    make_certificates,
    openssl_available,
    trustme_available,
)

BACKENDS = [
    pytest.param(
        "trustme",
        marks=pytest.mark.skipif(not trustme_available(), reason="trustme is not installed"),
    ),
    pytest.param(
        "openssl",
        marks=pytest.mark.skipif(not openssl_available(), reason="openssl is not installed"),
    ),
]


def _strict(context: ssl.SSLContext) -> ssl.SSLContext:
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    return context


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext, host: str) -> dict[str, object]:
    """Connect ``client`` to ``server`` over loopback; return what the server saw of the peer."""
    seen: dict[str, object] = {}
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            try:
                with server.wrap_socket(conn, server_side=True) as tls:
                    seen["peer"] = tls.getpeercert()
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError) as exc:
                seen["error"] = exc

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                with client.wrap_socket(raw, server_hostname=host) as tls:
                    assert tls.recv(2) == b"ok"
        finally:
            thread.join(5)
    return seen


@pytest.fixture(params=BACKENDS)
def certs(request: pytest.FixtureRequest, tmp_path: Path) -> Certificates:
    return make_certificates(tmp_path, backend=request.param)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_server_certificate_passes_strict_verification(certs: Certificates, host: str) -> None:
    seen = _handshake(certs.server_context(), _strict(certs.client_context()), host)
    assert "error" not in seen


def test_client_certificate_passes_strict_mutual_verification(certs: Certificates) -> None:
    server = _strict(certs.server_context(mutual=True))
    seen = _handshake(server, _strict(certs.client_context(cert=True)), "localhost")
    assert "error" not in seen
    assert seen["peer"]


def test_unrelated_ca_is_refused(certs: Certificates, tmp_path: Path) -> None:
    other = make_certificates(tmp_path / "other")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(certs.server_context(), _strict(other.client_context()), "localhost")
