"""AMQP options from URL and keywords, secrets masked, and the topic → binding key mapping."""

from __future__ import annotations

import pytest
from eventforge import connect
from eventforge.errors import ConfigurationError
from eventforge_amqp._settings import parse_settings
from eventforge_amqp._topology import binding_key, group_queue_name, is_reply_address, valid_name
from eventforge_amqp.transport import AmqpAuthError, AmqpConnectError, AmqpTransport


def test_url_parts_and_query_options_are_read() -> None:
    s = parse_settings("amqp://app:s3cret@broker:5673/prod?exchange=events&prefetch=7", {})
    assert (s.host, s.port, s.vhost, s.user, s.password) == (
        "broker",
        5673,
        "prod",
        "app",
        "s3cret",
    )
    assert s.options["exchange"] == "events"
    assert s.options["prefetch"] == 7


def test_keywords_override_the_url_and_defaults_fill_in() -> None:
    s = parse_settings("amqp://h?prefetch=7", {"prefetch": 9, "exchange": "events"})
    assert s.options["prefetch"] == 9
    assert s.options["exchange"] == "events"
    assert s.options["publish_timeout"] == 10.0
    assert (s.user, s.password, s.vhost, s.port) == ("guest", "guest", "/", 5672)


def test_amqps_defaults_to_the_tls_port() -> None:
    s = parse_settings("amqps://h", {})
    assert s.tls
    assert s.port == 5671


def test_percent_encoded_vhost_and_password() -> None:
    s = parse_settings("amqp://u:p%40ss@h/%2Fapp", {})
    assert s.password == "p@ss"
    assert s.vhost == "/app"


def test_unknown_option_names_the_accepted_ones_and_masks_the_password() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_settings("amqp://u:topsecret@h/?prefech=3", {})
    text = str(info.value)
    assert "prefech" in text
    assert "prefetch" in text
    assert "topsecret" not in text


def test_invalid_values_are_refused_with_the_reason() -> None:
    with pytest.raises(ConfigurationError, match="prefetch"):
        parse_settings("amqp://h", {"prefetch": 0})
    with pytest.raises(ConfigurationError, match="exchange"):
        parse_settings("amqp://h?exchange=has space", {})
    with pytest.raises(ConfigurationError, match="amqp:// or amqps://"):
        parse_settings("http://h", {})


def test_safe_url_masks_the_password() -> None:
    s = parse_settings("amqp://app:s3cret@broker/", {})
    assert "s3cret" not in s.safe_url()
    assert "s3cret" in s.client_url()


@pytest.mark.parametrize(
    ("pattern", "key"),
    [
        ("orders.created", "orders.created"),
        ("orders.*", "orders.*"),
        ("orders.**", "orders.#"),
        ("a.**.z", "a.#.z"),
        ("**", "#"),
        ("*.b.*", "*.b.*"),
    ],
)
def test_patterns_map_onto_amqp_binding_keys(pattern: str, key: str) -> None:
    assert binding_key(pattern) == key


def test_group_queue_names_stay_within_amqp_limits() -> None:
    assert (
        group_queue_name("eventforge", "workers", "jobs.new") == "eventforge.group.workers.jobs.new"
    )
    wildcard = group_queue_name("eventforge", "workers", "jobs.*")
    assert wildcard.startswith("eventforge.group.workers.jobs.+.")  # AMQP names have no '*'
    assert valid_name(wildcard)
    long = group_queue_name("eventforge", "g" * 200, "x." * 100 + "y")
    assert len(long.encode()) <= 255
    assert long != group_queue_name("eventforge", "g" * 200, "x." * 100 + "z")


def test_reply_addresses_are_recognised() -> None:
    assert is_reply_address("amq.rabbitmq.reply-to.g1h2AA==")
    assert not is_reply_address("amq.rabbitmq.reply-to")
    assert not is_reply_address("orders.created")


def test_unreachable_broker_fails_once_with_a_clear_error() -> None:
    with pytest.raises(AmqpConnectError) as info:
        AmqpTransport("amqp://u:hidden@127.0.0.1:1/", connect_timeout=2)
    assert not isinstance(info.value, AmqpAuthError)
    assert "hidden" not in str(info.value)
    assert "127.0.0.1:1" in str(info.value)


def test_connect_resolves_amqp_urls_through_the_plugin() -> None:
    with pytest.raises(AmqpConnectError):
        connect("amqp://127.0.0.1:1/?connect_timeout=1")
