"""Transport URLs: bad input is a ConfigurationError naming what is wrong, and a password never
appears in an error, even for a URL too malformed to split."""

from __future__ import annotations

from typing import Any

import pytest
from eventforge.errors import ConfigurationError
from eventforge.transport.urls import mask_url, parse_bool, query_options, split_url


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://user:s3cret@host:6379/0", "redis://user:***@host:6379/0"),
        ("redis://:s3cret@host", "redis://:***@host"),
        ("nats://host?token=abc&user=me", "nats://host?token=***&user=me"),
        (
            "tcp://h?password=a&passwd=b&secret=c&api_key=d&apikey=e&api-key=f&credentials=g",
            "tcp://h?password=***&passwd=***&secret=***&api_key=***&apikey=***&api-key=***"
            "&credentials=***",
        ),
        ("tcp://h?Password=a&tls=1", "tcp://h?Password=***&tls=1"),
        ("redis:///0?password=s3cret", "redis:///0?password=***"),
        ("http:///x?token=1", "http:///x?token=***"),
        ("tcp://h?password=x&flag&empty=", "tcp://h?password=***&flag&empty="),
        ("unix:///tmp/a:b.sock?password=x", "unix:///tmp/a:b.sock?password=***"),
        ("redis://u:s3cret@[::1:6379/0?password=x", "redis://u:***@[::1:6379/0?password=***"),
        ("redis://:s3cret@[::1", "redis://:***@[::1"),
    ],
)
def test_mask_url_hides_passwords_and_secret_options(url: str, masked: str) -> None:
    assert mask_url(url) == masked
    assert "s3cret" not in mask_url(url)


@pytest.mark.parametrize(
    "url", ["tcp://host:5555", "redis://user@host/0?db=1&flag", "memory://", "tcp://[::1"]
)
def test_mask_url_leaves_a_url_without_secrets_as_it_is(url: str) -> None:
    assert mask_url(url) == url


def test_split_url_checks_the_scheme_case_insensitively() -> None:
    parts = split_url("TCP://host:5555/x", "tcp", "tcp+tls")
    assert (parts.hostname, parts.port, parts.path) == ("host", 5555, "/x")
    with pytest.raises(ConfigurationError) as info:
        split_url("redis://user:s3cret@host", "tcp", "tcp+tls")
    assert str(info.value) == (
        "URL 'redis://user:***@host' has scheme 'redis'; expected 'tcp://' or 'tcp+tls://'"
    )
    assert info.value.key == "transport"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("tcp://host:abc", "Port could not be cast to integer value as 'abc'"),
        ("tcp://host:4222.5", "Port could not be cast to integer value as '4222.5'"),
        ("tcp://host:99999", "Port out of range"),
        ("tcp://user:s3cret@[::1:80", "Invalid IPv6 URL"),
    ],
)
def test_a_malformed_url_is_a_configuration_error(url: str, problem: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        split_url(url, "tcp")
    assert problem in str(info.value)
    assert str(info.value).startswith(f"malformed URL {mask_url(url)!r}")
    assert "s3cret" not in str(info.value)
    assert info.value.key == "transport"


@pytest.mark.parametrize("text", ["1", "true", "yes", "on", "TRUE", " Yes ", "On"])
def test_parse_bool_true(text: str) -> None:
    assert parse_bool(text) is True


@pytest.mark.parametrize("text", ["0", "false", "no", "off", "FALSE", " No ", "Off"])
def test_parse_bool_false(text: str) -> None:
    assert parse_bool(text) is False


@pytest.mark.parametrize("text", ["", "2", "maybe", "truthy", "y"])
def test_parse_bool_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match=f"expected true/false, got {text!r}"):
        parse_bool(text)


CONVERTERS: dict[str, Any] = {"tls": parse_bool, "size": int, "name": str}


def test_query_options_converts_and_keywords_win() -> None:
    options = query_options("tcp://h?tls=yes&size=10&name=", CONVERTERS)
    assert options == {"tls": True, "size": 10, "name": ""}
    assert query_options("tcp://h?size=10", CONVERTERS, size=20, extra=1) == {
        "size": 20,
        "extra": 1,
    }
    assert query_options("tcp://h", CONVERTERS) == {}


def test_an_unknown_option_names_the_accepted_ones() -> None:
    with pytest.raises(ConfigurationError) as info:
        query_options("tcp://u:s3cret@h?colour=red", CONVERTERS)
    assert str(info.value) == (
        "unknown option 'colour' in URL 'tcp://u:***@h?colour=red'; accepted: name, size, tls"
    )
    assert info.value.key == "transport.colour"


def test_an_option_given_twice_is_refused() -> None:
    with pytest.raises(ConfigurationError) as info:
        query_options("tcp://h?size=1&size=2", CONVERTERS)
    assert str(info.value) == "option 'size' is given twice in URL 'tcp://h?size=1&size=2'"
    assert info.value.key == "transport.size"


@pytest.mark.parametrize(
    ("query", "key", "problem"),
    [
        ("tls=maybe", "tls", "expected true/false, got 'maybe'"),
        ("size=ten", "size", "invalid literal for int()"),
    ],
)
def test_an_unconvertible_option_names_the_option(query: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        query_options(f"tcp://h?{query}", CONVERTERS)
    assert str(info.value).startswith(f"option {query.replace('=', '=' + chr(39))}' in URL")
    assert problem in str(info.value)
    assert info.value.key == f"transport.{key}"
    assert info.value.__cause__ is None  # the message says it all


def test_a_converter_raising_type_error_is_reported_the_same_way() -> None:
    def needs_digits(text: str) -> int:
        if not text.isdigit():
            raise TypeError("digits only")
        return int(text)

    with pytest.raises(ConfigurationError, match="option n='x' in URL 'tcp://h\\?n=x' is invalid"):
        query_options("tcp://h?n=x", {"n": needs_digits})


def test_query_options_of_a_malformed_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as info:
        query_options("tcp://u:s3cret@[::1?size=1", CONVERTERS)
    assert "Invalid IPv6 URL" in str(info.value)
    assert "s3cret" not in str(info.value)
    assert info.value.key == "transport"
