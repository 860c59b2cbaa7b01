"""TLS, mutual TLS and credentials files (JWT + nkey) against private nats-server processes.

Certificates are made with openssl (:mod:`eventforge.testing.certs`); the credentials tests
build an operator / account / user JWT chain with ``nkeys`` and run nats-server in operator
mode with a memory resolver. Failures must be clear and immediate: each refused connect is
checked to have reached the server exactly once (no retries), from the server's own log.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eventforge import MessageQueue
from eventforge.errors import ConfigurationError
from eventforge.message import Message
from eventforge.testing.brokers import NatsServer
from eventforge.testing.certs import Certificates, certificates_available, make_certificates
from eventforge.testing.conformance import Collector
from eventforge.transports.nats import NatsTransport
from eventforge_nats.transport import NatsAuthError, NatsConnectError

pytestmark = pytest.mark.broker

ServerFactory = Callable[..., NatsServer]


@pytest.fixture
def transports() -> Iterator[Callable[..., NatsTransport]]:
    """Make NatsTransports that are closed after the test."""
    made: list[NatsTransport] = []

    def make(*args: Any, **options: Any) -> NatsTransport:
        transport = NatsTransport(*args, **options)
        made.append(transport)
        return transport

    yield make
    for transport in made:
        transport.close()


class LogWatch:
    """Count what the server logs from now on (or from its start)."""

    def __init__(self, server: NatsServer, *, from_start: bool = False) -> None:
        self.path = Path(server.log_path)
        self.start = 0 if from_start else self.path.stat().st_size

    def count(self, text: str, *, at_least: int = 1, timeout: float = 5.0) -> int:
        """How often ``text`` was logged, once it was ``at_least`` times (the log may lag)."""
        deadline = time.monotonic() + timeout
        while True:
            with self.path.open("rb") as f:
                f.seek(self.start)
                found = f.read().decode(errors="replace").count(text)
            if found >= at_least or time.monotonic() >= deadline:
                return found
            time.sleep(0.01)


def _pub_sub_round_trip(sender: NatsTransport, receiver: NatsTransport, topic: str) -> None:
    got = Collector()
    receiver.subscribe(topic, got)
    for n in range(20):
        sender.send(Message(topic, {"n": n}))
    assert got.wait_for_count(20, 10.0)
    assert [m.payload["n"] for m in got.messages] == list(range(20))


# -- TLS ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A CA, a server certificate for 127.0.0.1 / localhost and a client certificate."""
    if not certificates_available():
        pytest.skip("neither trustme nor openssl is installed")
    return make_certificates(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_certs(tmp_path_factory: pytest.TempPathFactory, certs: Certificates) -> Certificates:
    """An unrelated CA (and certificates it signed) that the server does not trust."""
    return make_certificates(tmp_path_factory.mktemp("other-pki"))


def _tls_server(
    factory: ServerFactory,
    certs: Certificates,
    directory: Path,
    *,
    mutual: bool,
    port: int | None = None,
) -> NatsServer:
    config = directory / ("mtls.conf" if mutual else "tls.conf")
    config.write_text(
        "tls {\n"
        f'  cert_file: "{certs.server_cert}"\n'
        f'  key_file: "{certs.server_key}"\n'
        f'  ca_file: "{certs.ca_cert}"\n'
        f"  verify: {'true' if mutual else 'false'}\n"
        "  timeout: 2\n"
        "}\n"
    )
    server = factory(jetstream=False, config_file=config, port=port)
    # the readiness probe hung up before a TLS handshake; wait for that line so that a
    # LogWatch made afterwards counts only the test's connections
    LogWatch(server, from_start=True).count("TLS handshake error")
    return server


def test_tls_url_with_tls_ca_round_trip(
    nats_server_factory: ServerFactory,
    certs: Certificates,
    tmp_path: Path,
    transports: Callable[..., NatsTransport],
) -> None:
    server = _tls_server(nats_server_factory, certs, tmp_path, mutual=False)
    url = f"tls://127.0.0.1:{server.port}"
    a = transports(url, tls_ca=str(certs.ca_cert))
    b = transports(url, tls_ca=str(certs.ca_cert))
    _pub_sub_round_trip(a, b, "secure.data")
    # a nats:// URL to a server that requires TLS is upgraded to TLS the same way
    c = transports(f"nats://127.0.0.1:{server.port}", tls_ca=str(certs.ca_cert))
    _pub_sub_round_trip(c, a, "secure.upgraded")
    b.subscribe("secure.echo", lambda m: b.send(Message(m.reply_to or "", m.payload)))
    reply = a.request(Message("secure.echo", "ping"), timeout=5.0)
    assert reply is not None
    assert reply.payload == "ping"


def test_tls_context_given_as_tls(
    nats_server_factory: ServerFactory,
    certs: Certificates,
    tmp_path: Path,
    transports: Callable[..., NatsTransport],
) -> None:
    server = _tls_server(nats_server_factory, certs, tmp_path, mutual=False)
    url = f"tls://127.0.0.1:{server.port}"
    a = transports(url, tls=certs.client_context())
    b = transports(url, tls=certs.client_context())
    _pub_sub_round_trip(a, b, "secure.context")


def test_tls_hostname_is_checked_against_the_certificate(
    nats_server_factory: ServerFactory,
    certs: Certificates,
    tmp_path: Path,
    transports: Callable[..., NatsTransport],
) -> None:
    server = _tls_server(nats_server_factory, certs, tmp_path, mutual=False)
    url = f"tls://127.0.0.1:{server.port}"
    transports(url, tls_ca=str(certs.ca_cert), tls_hostname="localhost")  # named in the SAN
    with pytest.raises(NatsConnectError, match="did not verify") as info:
        transports(url, tls_ca=str(certs.ca_cert), tls_hostname="not-in-the-certificate")
    assert "tls_hostname" in str(info.value)


def test_mutual_tls_with_client_certificate(
    nats_server_factory: ServerFactory,
    certs: Certificates,
    tmp_path: Path,
    transports: Callable[..., NatsTransport],
) -> None:
    server = _tls_server(nats_server_factory, certs, tmp_path, mutual=True)
    a = transports(
        f"tls://127.0.0.1:{server.port}",
        tls_ca=str(certs.ca_cert),
        tls_cert=str(certs.client_cert),
        tls_key=str(certs.client_key),
    )
    # the same options as URL query parameters, and a context with the client certificate
    b = transports(
        f"tls://127.0.0.1:{server.port}?tls_ca={certs.ca_cert}"
        f"&tls_cert={certs.client_cert}&tls_key={certs.client_key}"
    )
    c = transports(f"tls://127.0.0.1:{server.port}", tls=certs.client_context(cert=True))
    _pub_sub_round_trip(a, b, "mutual.data")
    _pub_sub_round_trip(c, a, "mutual.context")


def test_mutual_tls_without_client_certificate_fails_clearly(
    nats_server_factory: ServerFactory, certs: Certificates, tmp_path: Path
) -> None:
    server = _tls_server(nats_server_factory, certs, tmp_path, mutual=True)
    log = LogWatch(server)
    with pytest.raises(NatsConnectError) as info:
        NatsTransport(
            f"tls://127.0.0.1:{server.port}", tls_ca=str(certs.ca_cert), connect_attempts=3
        )
    message = str(info.value)
    assert not isinstance(info.value, NatsAuthError)
    assert "requires a client certificate" in message
    assert "tls_cert=" in message
    assert "tls_key=" in message
    # TLS 1.3: the server's "certificate required" alert may be lost in the reset of the
    # connection; the client retries only then, and gives up as soon as it sees the alert
    assert 1 <= log.count("didn't provide a certificate") <= 3


def test_client_certificate_from_an_untrusted_ca_is_refused_clearly(
    nats_server_factory: ServerFactory,
    certs: Certificates,
    other_certs: Certificates,
    tmp_path: Path,
) -> None:
    server = _tls_server(nats_server_factory, certs, tmp_path, mutual=True)
    log = LogWatch(server)
    with pytest.raises(NatsConnectError) as info:
        NatsTransport(
            f"tls://127.0.0.1:{server.port}",
            tls_ca=str(certs.ca_cert),
            tls_cert=str(other_certs.client_cert),
            tls_key=str(other_certs.client_key),
            connect_attempts=3,
        )
    message = str(info.value)
    assert not isinstance(info.value, NatsAuthError)
    assert "client certificate" in message
    assert "CA the server trusts" in message
    assert 1 <= log.count("failed to verify certificate") <= 3  # see the test above


@pytest.mark.parametrize("scheme", ["tls", "nats"])
def test_wrong_ca_fails_once_and_clearly(
    scheme: str,
    nats_server_factory: ServerFactory,
    certs: Certificates,
    other_certs: Certificates,
    tmp_path: Path,
) -> None:
    """A server certificate the client cannot verify: one attempt, an error naming tls_ca.

    ``nats://`` to a server that requires TLS upgrades to TLS as well, and fails the same way.
    """
    server = _tls_server(nats_server_factory, certs, tmp_path, mutual=False)
    log = LogWatch(server)
    with pytest.raises(NatsConnectError) as info:
        NatsTransport(
            f"{scheme}://127.0.0.1:{server.port}",
            tls_ca=str(other_certs.ca_cert),
            connect_attempts=50,
        )
    message = str(info.value)
    assert not isinstance(info.value, NatsAuthError)
    assert "certificate did not verify" in message
    assert "tls_ca=" in message
    assert "Not retrying" in message
    assert log.count("TLS handshake error") == 1, "the client retried"


@pytest.mark.parametrize(
    ("scheme", "tls_options"),
    [("tls", {"tls_ca": True}), ("nats", {"tls_ca": True}), ("tls", {})],
    ids=["tls-url-with-tls_ca", "nats-url-with-tls_ca", "tls-url-alone"],
)
def test_tls_requested_to_a_server_without_tls_is_refused(
    scheme: str,
    tls_options: dict[str, bool],
    nats_server_factory: ServerFactory,
    certs: Certificates,
    transports: Callable[..., NatsTransport],
) -> None:
    """No CONNECT, hence no credentials, reaches a server that does not offer TLS.

    The server runs with ``-DV`` (debug and protocol trace): it logs each client connection
    and every protocol line it receives. A plaintext client with the same credentials shows
    that a CONNECT would be in that trace.
    """
    server = nats_server_factory(
        jetstream=False, user="app", password="s3cret-pw", extra_args=["-DV"]
    )
    log = LogWatch(server)
    options = {"tls_ca": str(certs.ca_cert)} if tls_options else {}
    with pytest.raises(NatsConnectError) as info:
        NatsTransport(
            f"{scheme}://app:s3cret-pw@127.0.0.1:{server.port}", connect_attempts=50, **options
        )
    message = str(info.value)
    assert not isinstance(info.value, NatsAuthError)
    assert f"{scheme}://127.0.0.1:{server.port} does not offer TLS but TLS was requested" in message
    assert "refusing to send the connect and any credentials in plaintext" in message
    assert "Enable TLS on the server" in message
    assert "Not retrying" in message
    assert "s3cret-pw" not in message
    assert log.count("Client connection created") == 1, "the client retried"
    assert log.count("CONNECT", timeout=0.5) == 0, "the connect was sent in plaintext"
    # plain nats:// without TLS options still works, and its CONNECT is in the trace
    plain = transports(f"nats://app:s3cret-pw@127.0.0.1:{server.port}")
    _pub_sub_round_trip(plain, plain, "plain.still.works")
    assert log.count("CONNECT") == 1


def test_server_offering_tls_without_requiring_it_is_connected_with_tls(
    nats_server_factory: ServerFactory,
    certs: Certificates,
    tmp_path: Path,
    transports: Callable[..., NatsTransport],
) -> None:
    """``allow_non_tls``: the server's INFO says ``tls_available``; TLS asked for is used."""
    config = tmp_path / "optional-tls.conf"
    config.write_text(
        "allow_non_tls: true\n"
        "tls {\n"
        f'  cert_file: "{certs.server_cert}"\n'
        f'  key_file: "{certs.server_key}"\n'
        "  timeout: 2\n"
        "}\n"
    )
    server = nats_server_factory(jetstream=False, config_file=config, extra_args=["-D"])
    log = LogWatch(server)
    secure = transports(f"tls://127.0.0.1:{server.port}", tls_ca=str(certs.ca_cert))
    assert log.count("TLS handshake complete") == 1
    plain = transports(f"nats://127.0.0.1:{server.port}")  # allowed by this server
    _pub_sub_round_trip(secure, plain, "optional.tls")
    assert log.count("TLS handshake complete", timeout=0.5) == 1


def test_reconnect_to_a_server_without_tls_sends_no_connect(
    nats_server_factory: ServerFactory,
    certs: Certificates,
    tmp_path: Path,
    transports: Callable[..., NatsTransport],
) -> None:
    """The TLS server is replaced by a plaintext one on the same port, then comes back.

    The client keeps refusing the plaintext server (no CONNECT in its trace, the refusal in
    ``last_error``) and reconnects over TLS once the TLS server is back.
    """
    server = _tls_server(nats_server_factory, certs, tmp_path, mutual=False)
    url = f"tls://127.0.0.1:{server.port}"
    a = transports(url, tls_ca=str(certs.ca_cert), reconnect_time_wait=0.1)
    b = transports(url, tls_ca=str(certs.ca_cert))
    _pub_sub_round_trip(b, a, "reconnect.before")
    server.kill()
    impostor = nats_server_factory(jetstream=False, port=server.port, extra_args=["-DV"])
    log = LogWatch(impostor, from_start=True)
    assert log.count("Client connection created", at_least=4, timeout=20.0) >= 4
    assert log.count("CONNECT", timeout=0.5) == 0, "a reconnect sent the connect in plaintext"
    stats = a.stats()
    assert stats["state"] != "connected"
    assert "does not offer TLS but TLS was requested" in (stats["last_error"] or "")
    impostor.kill()
    # b was cut off as well; the TLS server returns on the port and both reconnect over TLS
    _tls_server(nats_server_factory, certs, tmp_path, mutual=False, port=server.port)
    deadline = time.monotonic() + 20.0
    while (a.stats()["state"], b.stats()["state"]) != ("connected", "connected"):
        assert time.monotonic() < deadline, (a.stats(), b.stats())
        time.sleep(0.05)
    _pub_sub_round_trip(b, a, "reconnect.after")


def test_nats_py_without_the_tls_hooks_fails_loudly(
    nats_server_factory: ServerFactory,
    certs: Certificates,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A nats-py lacking a method the TLS guard overrides: no connect, a clear error."""
    from eventforge_nats import _tls

    server = _tls_server(nats_server_factory, certs, tmp_path, mutual=False)
    log = LogWatch(server)
    monkeypatch.setattr(_tls, "_TLS_HOOKS", (*_tls._TLS_HOOKS, "_gone_in_v9"))
    _tls.tls_enforcing_client.cache_clear()
    try:
        with pytest.raises(NatsConnectError, match=r"has no Client\._gone_in_v9") as info:
            NatsTransport(f"tls://127.0.0.1:{server.port}", tls_ca=str(certs.ca_cert))
    finally:
        _tls.tls_enforcing_client.cache_clear()
    assert "never sent unencrypted" in str(info.value)
    assert log.count("Client connection created", timeout=0.5) == 0


def test_connection_left_unencrypted_by_nats_py_is_closed_loudly(
    nats_server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last line of defence: a nats-py that skips the hooks (here: the plain Client).

    The credentials may have gone out by then; the connection is not kept and the error says
    so, instead of working in plaintext.
    """
    from eventforge_nats import _connection
    from nats.aio.client import Client

    server = nats_server_factory(jetstream=False)
    monkeypatch.setattr(_connection, "tls_enforcing_client", lambda: Client)
    with pytest.raises(NatsConnectError, match="is not encrypted although TLS was requested"):
        NatsTransport(f"tls://127.0.0.1:{server.port}")


# -- credentials files: operator / account / user JWTs -----------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _new_key(prefix: int) -> Any:
    import nkeys

    return nkeys.from_seed(nkeys.encode_seed(os.urandom(32), prefix))


def _public(key: Any) -> str:
    return str(key.public_key.decode())


def _jwt(subject: str, signer: Any, kind: str, name: str, **nats: Any) -> str:
    """A NATS JWT (v2) for ``subject``, issued and signed by ``signer`` (an nkeys KeyPair).

    The header names the ``ed25519-nkey`` algorithm; the signature is the signer's Ed25519
    signature of ``base64url(header).base64url(claims)``, base64url without padding.
    """
    header = _b64url(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    claims: dict[str, Any] = {
        "iat": int(time.time()),
        "iss": _public(signer),
        "name": name,
        "sub": subject,
        "nats": {**nats, "type": kind, "version": 2},
    }
    digest = hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest()
    claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
    payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    signature = _b64url(signer.sign(f"{header}.{payload}".encode()))
    return f"{header}.{payload}.{signature}"


def _account_jwt(account: Any, operator: Any, name: str) -> str:
    unlimited = dict.fromkeys(("subs", "conn", "leaf", "imports", "exports", "data", "payload"), -1)
    return _jwt(
        _public(account), operator, "account", name, limits={**unlimited, "wildcards": True}
    )


def _user_jwt(user: Any, account: Any) -> str:
    """A user JWT issued and signed by ``account``, without limits."""
    return _jwt(_public(user), account, "user", "app-user", subs=-1, data=-1, payload=-1)


def _creds(path: Path, user_jwt: str, seed: bytes) -> str:
    path.write_text(
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{seed.decode()}\n"
        "------END USER NKEY SEED------\n"
    )
    return str(path)


@dataclass
class Operator:
    """nats-server in operator mode trusting one account, and the keys to make users."""

    server: NatsServer
    account: Any
    directory: Path

    def user_creds(self, name: str) -> tuple[str, bytes]:
        """A fresh user of the trusted account: the .creds path and the user's seed."""
        import nkeys

        user = _new_key(nkeys.PREFIX_BYTE_USER)
        path = _creds(self.directory / f"{name}.creds", _user_jwt(user, self.account), user.seed)
        return path, bytes(user.seed)


@pytest.fixture
def operator(nats_server_factory: ServerFactory, tmp_path: Path) -> Operator:
    """nats-server with ``operator:``, ``resolver: MEMORY`` and the account preloaded."""
    nkeys = pytest.importorskip("nkeys", reason="credentials files need nkeys")
    op = _new_key(nkeys.PREFIX_BYTE_OPERATOR)
    account = _new_key(nkeys.PREFIX_BYTE_ACCOUNT)
    (tmp_path / "operator.jwt").write_text(_jwt(_public(op), op, "operator", "test-operator"))
    config = tmp_path / "operator.conf"
    config.write_text(
        f'operator: "{tmp_path / "operator.jwt"}"\n'
        "resolver: MEMORY\n"
        "resolver_preload: {\n"
        f'  {_public(account)}: "{_account_jwt(account, op, "app")}"\n'
        "}\n"
    )
    server = nats_server_factory(jetstream=False, config_file=config)
    return Operator(server=server, account=account, directory=tmp_path)


def test_credentials_file_pub_sub_and_request(
    operator: Operator, transports: Callable[..., NatsTransport]
) -> None:
    creds, seed = operator.user_creds("app")
    server_side = MessageQueue(transport=transports(operator.server.url, credentials=creds))
    client_side = MessageQueue(transport=transports(operator.server.url, credentials=creds))
    got = Collector()
    server_side.subscribe("orders.*", got)

    @server_side.on("math.add")
    def add(message: Message) -> None:
        server_side.reply(message, message.payload["a"] + message.payload["b"])

    for n in range(10):
        client_side.publish("orders.created", {"n": n})
    assert got.wait_for_count(10, 10.0)
    assert [m.payload["n"] for m in got.messages] == list(range(10))
    response = client_side.request("math.add", {"a": 10, "b": 20}, timeout=5.0)
    assert response is not None
    assert response.payload == 30
    assert seed.decode() not in repr(client_side.transport)
    client_side.close()
    server_side.close()


def test_credentials_url_option(
    operator: Operator, transports: Callable[..., NatsTransport]
) -> None:
    creds, _ = operator.user_creds("by-url")
    a = transports(f"{operator.server.url}?credentials={creds}")
    b = transports(operator.server.url, credentials=creds)
    _pub_sub_round_trip(a, b, "url.creds")


def _unknown_account(operator: Operator) -> tuple[str, bytes]:
    import nkeys

    stranger = _new_key(nkeys.PREFIX_BYTE_ACCOUNT)
    user = _new_key(nkeys.PREFIX_BYTE_USER)
    path = _creds(operator.directory / "unknown.creds", _user_jwt(user, stranger), user.seed)
    return path, bytes(user.seed)


def _forged_signature(operator: Operator) -> tuple[str, bytes]:
    """A user JWT claiming the trusted account as issuer but signed by another key."""
    import nkeys

    forger = _new_key(nkeys.PREFIX_BYTE_ACCOUNT)
    user = _new_key(nkeys.PREFIX_BYTE_USER)
    token = _user_jwt(user, operator.account)
    header, payload, _ = token.split(".")
    forged = f"{header}.{payload}.{_b64url(forger.sign(f'{header}.{payload}'.encode()))}"
    return _creds(operator.directory / "forged.creds", forged, user.seed), bytes(user.seed)


def _someone_elses_seed(operator: Operator) -> tuple[str, bytes]:
    """A valid user JWT with the seed of another user (cannot sign the server's nonce)."""
    import nkeys

    user, other = _new_key(nkeys.PREFIX_BYTE_USER), _new_key(nkeys.PREFIX_BYTE_USER)
    token = _user_jwt(user, operator.account)
    return _creds(operator.directory / "mismatch.creds", token, other.seed), bytes(other.seed)


@pytest.mark.parametrize(
    "bad_creds",
    [_unknown_account, _forged_signature, _someone_elses_seed],
    ids=["unknown-account", "forged-signature", "wrong-seed"],
)
def test_refused_credentials_file_fails_once_with_auth_error(
    operator: Operator, bad_creds: Callable[[Operator], tuple[str, bytes]]
) -> None:
    path, seed = bad_creds(operator)
    log = LogWatch(operator.server)
    with pytest.raises(NatsAuthError) as info:
        NatsTransport(operator.server.url, credentials=path, connect_attempts=50)
    message = str(info.value)
    assert "refused the credentials" in message
    assert path in message
    assert "signed by an account the server trusts" in message
    assert seed.decode() not in message
    assert log.count("authentication error") == 1, "the client retried"


def test_no_credentials_against_operator_mode_is_an_auth_error(operator: Operator) -> None:
    log = LogWatch(operator.server)
    with pytest.raises(NatsAuthError, match="refused the credentials"):
        NatsTransport(operator.server.url, connect_attempts=50)
    assert log.count("authentication error") == 1, "the client retried"


@pytest.mark.parametrize("broken", ["missing", "empty", "no-jwt", "no-seed"])
def test_unusable_credentials_file_is_a_configuration_error(
    broken: str, operator: Operator, transports: Callable[..., NatsTransport]
) -> None:
    """Refused before the handshake, which would otherwise hang (no JWT) or fail obscurely."""
    good, seed = operator.user_creds("good")
    text = Path(good).read_text()
    path = operator.directory / f"{broken}.creds"
    if broken == "empty":
        path.write_text("")
    elif broken == "no-jwt":
        path.write_text(text[text.index("-----BEGIN USER NKEY SEED") :])
    elif broken == "no-seed":
        path.write_text(text[: text.index("-----BEGIN USER NKEY SEED")])
    with pytest.raises(ConfigurationError, match="credentials file") as info:
        NatsTransport(operator.server.url, credentials=str(path))
    assert info.value.key == "credentials"
    assert seed.decode() not in str(info.value)
    # the shared connection loop is still free: a good file connects afterwards
    transports(operator.server.url, credentials=good)


def test_credentials_file_without_nkeys_installed_is_a_clear_error(
    operator: Operator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a user without the [nkeys] extra sees (nkeys made unimportable for this test)."""
    creds, _ = operator.user_creds("no-nkeys")
    monkeypatch.setitem(sys.modules, "nkeys", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'eventforge-nats\[nkeys\]'"):
        NatsTransport(operator.server.url, credentials=creds)
