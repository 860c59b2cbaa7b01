"""Throwaway certificates for TLS tests: a CA, a server and a client certificate.

The certificates live in a directory the caller owns (a pytest ``tmp_path``), are valid for two
days and are signed by a CA made for the occasion, so a test exercises real verification: the
server certificate names ``127.0.0.1`` and ``localhost`` in its subjectAltName, the client
certificate serves mutual TLS, and a second :func:`make_certificates` call gives an unrelated
CA for "wrong CA" tests. The chain passes the strict X.509 checks that Python 3.13's default
context enables (``ssl.VERIFY_X509_STRICT``: a CA with ``keyUsage`` and key identifiers).

They are made with `trustme <https://pypi.org/project/trustme/>`_ when it is installed (the
``testing`` extra of eventforge-core brings it), else with the ``openssl`` command-line tool;
:func:`certificates_available` tells whether either is there, so a fixture can skip::

    if not certificates_available():
        pytest.skip("neither trustme nor openssl is installed")
    certs = make_certificates(tmp_path)
    server = TCPServerTransport("127.0.0.1", 0, ssl_context=certs.server_context())
"""

from __future__ import annotations

import datetime
import importlib.util
import shutil
import ssl
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path
from typing import Literal

__all__ = [
    "Certificates",
    "certificates_available",
    "make_certificates",
    "openssl_available",
    "trustme_available",
]


Backend = Literal["auto", "trustme", "openssl"]


def openssl_available() -> bool:
    """Tell whether the ``openssl`` command-line tool is on ``PATH``."""
    return shutil.which("openssl") is not None


def trustme_available() -> bool:
    """Tell whether the ``trustme`` package is installed."""
    return importlib.util.find_spec("trustme") is not None


def certificates_available() -> bool:
    """Tell whether :func:`make_certificates` can work here (trustme or openssl)."""
    return trustme_available() or openssl_available()


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
    backend: Backend = "auto",
) -> Certificates:
    """Make a CA, a server certificate for ``hosts`` and a client certificate in ``directory``.

    ``hosts`` go into the server certificate's subjectAltName. ``backend`` picks the maker:
    ``"auto"`` uses trustme when installed, else openssl. Raises ``RuntimeError`` naming what to
    install when the chosen maker is missing, or with openssl's output when a step fails.
    """
    if backend == "auto":
        backend = "trustme" if trustme_available() else "openssl"
    directory.mkdir(parents=True, exist_ok=True)
    if backend == "trustme":
        _with_trustme(directory, hosts, days)
    else:
        if not openssl_available():
            raise RuntimeError(
                "cannot make test certificates: neither trustme nor the openssl tool is "
                "installed; pip install 'eventforge-core[testing]' (or trustme)"
            )
        _with_openssl(directory, hosts, days)
    return Certificates(
        directory=directory,
        ca_cert=directory / "ca.pem",
        ca_key=directory / "ca.key",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
    )


def _with_trustme(directory: Path, hosts: Sequence[str], days: int) -> None:
    try:
        import trustme
    except ImportError:
        raise RuntimeError(
            "trustme is not installed: pip install 'eventforge-core[testing]' (or trustme)"
        ) from None
    # RSA keys, as the openssl maker makes: some servers word their TLS errors differently
    # for ECDSA chains, and tests match those words.
    ca = trustme.CA(organization_name="eventforge-test-ca", key_type=trustme.KeyType.RSA)
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    ca.private_key_pem.write_to_path(str(directory / "ca.key"))
    not_after = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=days)
    for name, identities in (("server", list(hosts)), ("client", ["client.eventforge.test"])):
        leaf = ca.issue_cert(
            *identities, common_name=name, not_after=not_after, key_type=trustme.KeyType.RSA
        )
        leaf.cert_chain_pems[0].write_to_path(str(directory / f"{name}.pem"))
        leaf.private_key_pem.write_to_path(str(directory / f"{name}.key"))


# What a CA and its leaves need to pass OpenSSL's strict checks (Python 3.13's default).
_CA_EXTENSIONS = (
    "basicConstraints=critical,CA:TRUE",
    "keyUsage=critical,keyCertSign,cRLSign",
    "subjectKeyIdentifier=hash",
)
_LEAF_EXTENSIONS = (
    "basicConstraints=critical,CA:FALSE",
    "keyUsage=critical,digitalSignature,keyEncipherment",
    "extendedKeyUsage=serverAuth,clientAuth",
    "subjectKeyIdentifier=hash",
    "authorityKeyIdentifier=keyid,issuer",
)


def _with_openssl(directory: Path, hosts: Sequence[str], days: int) -> None:
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
        *(arg for ext in _CA_EXTENSIONS for arg in ("-addext", ext)),
        cwd=directory,
    )
    sans = {"server": _san(hosts), "client": "DNS:client.eventforge.test"}
    for name in ("server", "client"):
        (directory / f"{name}.cnf").write_text(
            "\n".join([*_LEAF_EXTENSIONS, f"subjectAltName={sans[name]}"]) + "\n"
        )
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
            f"{name}.cnf",
            cwd=directory,
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
