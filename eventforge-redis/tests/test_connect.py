"""Connection settings: what a Redis URL and the keyword options mean, read through one table."""

from __future__ import annotations

import pytest
from eventforge.errors import ConfigurationError


def test_settings_from_url() -> None:
    """User, password, db, TLS and options come from the URL; the password stays out of repr."""
    from eventforge_redis import RedisSettings

    plain = RedisSettings.from_url("redis://localhost")
    assert (plain.host, plain.port, plain.db, plain.ssl) == ("localhost", 6379, 0, False)
    full = RedisSettings.from_url(
        "rediss://app:p%40ss@redis.example:6380/3?ssl_cert_reqs=none&socket_timeout=2.5"
    )
    assert (full.host, full.port, full.db, full.ssl) == ("redis.example", 6380, 3, True)
    assert (full.username, full.password) == ("app", "p@ss")
    assert full.ssl_options == {"ssl_cert_reqs": "none"}
    assert full.socket_timeout == 2.5
    assert "p@ss" not in repr(full)


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("http://localhost", "url"),
        ("redis://localhost/notanumber", "transport.db"),
        ("redis://localhost:0", "port"),
        ("redis://localhost?colour=blue", "transport.colour"),
    ],
)
def test_bad_urls_name_the_problem(url: str, key: str) -> None:
    from eventforge_redis import RedisSettings

    with pytest.raises(ConfigurationError) as info:
        RedisSettings.from_url(url)
    assert info.value.key == key


@pytest.mark.parametrize("spelling", ["on", "yes", "1", "true", "ON", "Yes", "True"])
def test_every_true_spelling_of_ssl_check_hostname_means_true(spelling: str) -> None:
    """Booleans are read by the kit's one converter, as on every transport: ``on``, ``yes``,
    ``1`` and ``true`` (any case) are all true."""
    from eventforge_redis import RedisSettings

    settings = RedisSettings.from_url(f"rediss://localhost?ssl_check_hostname={spelling}")
    assert settings.ssl_options["ssl_check_hostname"] is True


@pytest.mark.parametrize("spelling", ["off", "no", "0", "false", "FALSE"])
def test_every_false_spelling_of_ssl_check_hostname_means_false(spelling: str) -> None:
    from eventforge_redis import RedisSettings

    settings = RedisSettings.from_url(f"rediss://localhost?ssl_check_hostname={spelling}")
    assert settings.ssl_options["ssl_check_hostname"] is False


def test_a_boolean_that_is_neither_is_refused_by_name() -> None:
    from eventforge_redis import RedisSettings

    with pytest.raises(ConfigurationError) as info:
        RedisSettings.from_url("rediss://localhost?ssl_check_hostname=maybe")
    assert info.value.key == "transport.ssl_check_hostname"
    assert "1/true/yes/on" in str(info.value)


def test_keywords_and_query_are_read_by_the_same_table() -> None:
    """The same option given as a keyword or in the URL gives the same settings; keywords win,
    and the connection options reach redis-py's TLS connection unchanged."""
    from eventforge_redis import RedisSettings

    by_url = RedisSettings.from_url(
        "rediss://u:pw@h:6380/2?socket_timeout=2.5&ssl_check_hostname=yes&ssl_cert_reqs=required"
    )
    by_keywords = RedisSettings.from_url(
        "rediss://h:6380",
        username="u",
        password="pw",
        db=2,
        socket_timeout="2.5",
        ssl_check_hostname=True,
        ssl_cert_reqs="required",
    )
    assert by_url == by_keywords
    assert by_url.ssl_options == {"ssl_check_hostname": True, "ssl_cert_reqs": "required"}
    assert RedisSettings.from_url("redis://h/1?db=3", db=4).db == 4


def test_unknown_keyword_option_is_refused_like_an_unknown_query_option() -> None:
    from eventforge_redis import RedisTransport

    with pytest.raises(ConfigurationError) as info:
        RedisTransport(port=1, colour="blue")
    assert info.value.key == "transport.colour"
    assert "unknown redis option 'colour'" in str(info.value)
    assert "health_check_interval" in str(info.value), "the accepted names are listed"


def test_the_url_of_a_transport_masks_its_password() -> None:
    from eventforge_redis import RedisSettings

    settings = RedisSettings.from_url("rediss://app:s3cret@redis.example:6380/2")
    assert settings.url == "rediss://app:***@redis.example:6380/2"
    assert "s3cret" not in settings.url
    assert RedisSettings.from_url("redis://localhost").url == "redis://localhost:6379/0"


def test_a_bad_query_value_names_the_option_and_hides_a_password() -> None:
    from eventforge_redis import RedisSettings

    with pytest.raises(ConfigurationError) as info:
        RedisSettings.from_url("redis://u:hunter2@h?socket_timeout=soon")
    assert info.value.key == "transport.socket_timeout"
    assert "hunter2" not in str(info.value)
