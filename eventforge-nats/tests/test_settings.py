"""The options of a NATS transport: one table read from a URL's query and from keywords alike
(no broker needed)."""

from __future__ import annotations

import ssl
from dataclasses import fields

import pytest
from eventforge import connect
from eventforge.errors import ConfigurationError
from eventforge_nats._settings import OPTIONS, NatsSettings, parse_settings, parse_url, servers_from


def test_url_with_several_servers_and_options() -> None:
    settings = parse_url(
        "nats://alice:s3cret@h1:4222,h2:4223?name=svc&ping_interval=5&connect_attempts=2"
    )
    assert settings.servers == ["nats://alice:s3cret@h1:4222", "nats://alice:s3cret@h2:4223"]
    assert settings.name == "svc"
    assert settings.ping_interval == 5.0
    assert settings.connect_attempts == 2
    assert settings.safe_servers() == ["nats://alice:***@h1:4222", "nats://alice:***@h2:4223"]
    kwargs = settings.connect_kwargs()
    assert kwargs["max_reconnect_attempts"] == -1
    assert kwargs["pending_size"] == settings.pending_size > 0
    assert kwargs["ping_interval"] == 5.0


def test_tls_scheme_builds_a_context() -> None:
    settings = parse_url("tls://h1:4222")
    assert settings.uses_tls
    assert settings.connect_kwargs()["tls"] is not None
    assert "tls" not in parse_url("nats://h1:4222").connect_kwargs()


def test_servers_from_sequence() -> None:
    assert servers_from(["nats://a:1", "b:2,c:3"]) == ["nats://a:1", "nats://b:2", "nats://c:3"]


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("redis://h:1", "url"),
        ("nats://h:1?bogus=1", "transport.bogus"),
        ("nats://h:1?ping_interval=soon", "transport.ping_interval"),
        ("nats://h:1?ping_interval=0", "transport.ping_interval"),
    ],
)
def test_bad_urls_name_the_problem(url: str, key: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_url(url)
    assert info.value.key == key


@pytest.mark.parametrize(
    "url",
    [
        "nats://127.0.0.1:abc",
        "nats://127.0.0.1:4222.5",
        "nats://127.0.0.1:99999",
        "nats://127.0.0.1:0",
        "nats://127.0.0.1:4222,127.0.0.1:x",
    ],
)
def test_a_bad_port_is_a_configuration_error_before_any_connection(url: str) -> None:
    """Like the tcp and redis transports: ``key="port"``, from the URL alone (no server here)."""
    with pytest.raises(ConfigurationError, match="bad port") as info:
        connect(url)
    assert info.value.key == "port"


def test_token_and_password_are_exclusive() -> None:
    with pytest.raises(ConfigurationError, match="either token or user/password"):
        NatsSettings(token="t", user="u", password="p")


def test_every_option_is_a_settings_field() -> None:
    assert {f.name for f in fields(NatsSettings)} == {"servers", *OPTIONS.names}


def test_url_query_and_keywords_read_the_same() -> None:
    from_url = parse_url("nats://h:4222?trusted=on&delivery=loop&ack_wait=5&max_pending=10")
    from_keywords = parse_settings(
        "nats://h:4222", {"trusted": True, "delivery": "loop", "ack_wait": 5, "max_pending": 10}
    )
    assert from_url == from_keywords
    assert from_url.trusted is True
    assert from_url.ack_wait == 5.0


@pytest.mark.parametrize(("text", "value"), [("on", True), ("yes", True), ("0", False)])
def test_booleans_are_spelled_as_on_every_transport(text: str, value: bool) -> None:
    assert parse_url(f"nats://h:4222?trusted={text}").trusted is value


def test_keywords_win_over_the_url() -> None:
    settings = parse_settings("nats://h:4222?ping_interval=5&name=a", {"name": "b"})
    assert (settings.ping_interval, settings.name) == (5.0, "b")


def test_unknown_option_names_the_accepted_ones_in_a_url_and_as_a_keyword() -> None:
    with pytest.raises(
        ConfigurationError, match=r"unknown nats option 'colour'.*accepted: ack_wait"
    ):
        parse_url("nats://h:4222?colour=red")
    with pytest.raises(ConfigurationError, match="unknown nats option 'colour'") as info:
        parse_settings("nats://h:4222", {"colour": "red"})
    assert info.value.key == "transport.colour"


def test_a_tls_context_cannot_come_from_a_url() -> None:
    with pytest.raises(ConfigurationError, match=r"ssl\.SSLContext given as a keyword.*tls://"):
        parse_url("nats://h:4222?tls=yes")
    context = ssl.create_default_context()
    assert parse_settings("nats://h:4222", {"tls": context}).ssl_context() is context


@pytest.mark.parametrize(
    "url",
    [
        "nats://h:4222?token=s3cr3t-tok&ping_interval=soon",
        "nats://s3cr3t-tok@h:4222?bogus=1",
        "nats://app:s3cr3t-tok@h:4222?bogus=1",
        "nats://h:4222?password=s3cr3t-tok&max_pending=0",
    ],
)
def test_errors_never_echo_a_secret(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_url(url)
    assert "s3cr3t-tok" not in str(info.value)


def test_a_token_in_the_user_part_is_masked() -> None:
    settings = parse_url("nats://s3cr3t-tok@h:4222")
    assert settings.safe_servers() == ["nats://***@h:4222"]
