"""Opening a NATS connection against private nats-servers: refused credentials fail at once
and never leak, an unreachable server fails after the bounded attempts, a credentials file
needs the nkeys package."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest
from eventforge.errors import ConfigurationError
from eventforge.testing.brokers import NatsServer, free_port
from eventforge_nats.transport import NatsAuthError, NatsConnectError, NatsTransport

pytestmark = pytest.mark.broker


def test_wrong_password_fails_fast_without_leaking_it(nats_server_factory: Any) -> None:
    server = nats_server_factory(user="alice", password="right-pw", jetstream=False)
    with pytest.raises(NatsAuthError) as info:
        NatsTransport(f"nats://alice:wrong-pw@127.0.0.1:{server.port}", connect_attempts=50)
    assert "Authorization Violation" in str(info.value)
    assert "wrong-pw" not in str(info.value)
    good = NatsTransport(f"nats://127.0.0.1:{server.port}", user="alice", password="right-pw")
    assert "right-pw" not in repr(good)
    good.close()


def test_wrong_token_fails_fast(nats_server_factory: Any) -> None:
    server = nats_server_factory(token="tok-123", jetstream=False)
    with pytest.raises(NatsAuthError):
        NatsTransport(f"nats://127.0.0.1:{server.port}", token="nope", connect_attempts=50)
    good = NatsTransport(f"nats://127.0.0.1:{server.port}", token="tok-123")
    good.close()


def test_unreachable_server_fails_after_bounded_attempts() -> None:
    port = free_port()
    with pytest.raises(NatsConnectError, match="after 2 attempt") as info:
        NatsTransport(f"nats://127.0.0.1:{port}", connect_attempts=2, connect_timeout=0.5)
    assert not isinstance(info.value, NatsAuthError)


def test_credentials_file_without_nkeys_is_a_clear_error(
    nats_server: NatsServer, tmp_path: Any
) -> None:

    if importlib.util.find_spec("nkeys") is not None:
        pytest.skip("nkeys is installed: the missing-package error cannot happen here")
    creds = tmp_path / "app.creds"
    creds.write_text("not used")
    with pytest.raises(ConfigurationError, match=r"pip install 'eventforge-nats\[nkeys\]'"):
        NatsTransport(nats_server.url, credentials=str(creds))
