"""Throwaway certificates for TLS tests: a CA, a server and a client certificate, made by openssl.

The certificates live in a directory the caller owns (a pytest ``tmp_path``), are valid for two
days and are signed by a CA made for the occasion, so a test exercises real verification: the
server certificate names ``127.0.0.1`` and ``localhost`` in its subjectAltName, the client
certificate serves mutual TLS, and a second :func:`make_certificates` call gives an unrelated
CA for "wrong CA" tests.

The ``openssl`` command-line tool does the work (no Python crypto package is needed);
:func:`openssl_available` tells whether it is installed so a fixture can skip without it::

    if not openssl_available():
        pytest.skip("openssl is not installed")
    certs = make_certificates(tmp_path)
    server = TCPServerTransport("127.0.0.1", 0, ssl_context=certs.server_context())
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path

__all__ = ["Certificates", "make_certificates", "openssl_available"]


def openssl_available() -> bool:
    """Tell whether the ``openssl`` command-line tool is on ``PATH``."""
    return shutil.which("openssl") is not None


@dataclass(frozen=True)
class Certificates:
    """PEM files made by :func:`make_certificates` (keys are unencrypted), and contexts on them."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def server_context(self, *, mutual: bool = False) -> ssl.SSLContext:
        """A server-side context with the server certificate; ``mutual`` requires a client one."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.server_cert, self.server_key)
        if mutual:
            context.load_verify_locations(self.ca_cert)
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def client_context(self, *, cert: bool = False) -> ssl.SSLContext:
        """A client-side context trusting this CA; ``cert`` presents the client certificate."""
        context = ssl.create_default_context(cafile=str(self.ca_cert))
        if cert:
            context.load_cert_chain(self.client_cert, self.client_key)
        return context


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{done.stdout}{done.stderr}")


def make_certificates(
    directory: Path,
    *,
    hosts: Sequence[str] = ("127.0.0.1", "localhost"),
    days: int = 2,
) -> Certificates:
    """Make a CA, a server certificate for ``hosts`` and a client certificate in ``directory``.

    ``hosts`` go into the server certificate's subjectAltName (IP addresses as ``IP:``, names as
    ``DNS:``). Raises ``RuntimeError`` with openssl's output when a step fails, and
    ``FileNotFoundError`` when openssl is not installed (check :func:`openssl_available`).
    """
    directory.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        str(days),
        "-subj",
        "/CN=eventforge-test-ca",
        cwd=directory,
    )
    (directory / "san.cnf").write_text(f"subjectAltName={_san(hosts)}\n")
    for name in ("server", "client"):
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}",
            cwd=directory,
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            str(days),
            "-extfile",
            "san.cnf",
            cwd=directory,
        )
    return Certificates(
        directory=directory,
        ca_cert=directory / "ca.pem",
        ca_key=directory / "ca.key",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
    )


def _san(hosts: Sequence[str]) -> str:
    entries = []
    for host in hosts:
        try:
            ip_address(host)
        except ValueError:
            entries.append(f"DNS:{host}")
        else:
            entries.append(f"IP:{host}")
    return ",".join(entries)
