"""Topic patterns -> NATS subjects, and connection settings (no broker needed)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from eventforge import connect
from eventforge.errors import ConfigurationError
from eventforge.topics import topic_matches
from eventforge_nats._settings import NatsSettings, parse_url, servers_from
from eventforge_nats._subjects import plan_subjects


@pytest.mark.parametrize(
    ("pattern", "subjects", "needs_filter"),
    [
        ("orders.created", ("orders.created",), False),
        ("orders.*.created", ("orders.*.created",), False),
        ("orders.**", ("orders.>", "orders"), False),
        ("orders.*.**", ("orders.*.>", "orders.*"), False),
        ("orders.**.**", ("orders.>", "orders"), False),
        ("**", (">",), False),
        ("a.**.z", ("a.>",), True),
        ("**.z", (">",), True),
        ("a.**.b.**", ("a.>",), True),
    ],
)
def test_plan_subjects(pattern: str, subjects: tuple[str, ...], needs_filter: bool) -> None:
    plan = plan_subjects(pattern)
    assert plan.subjects == subjects
    assert plan.needs_filter is needs_filter


def _nats_match(subject: str, topic: str) -> bool:
    pat, top = subject.split("."), topic.split(".")
    for i, seg in enumerate(pat):
        if seg == ">":
            return len(top) > i
        if i >= len(top) or (seg != "*" and seg != top[i]):
            return False
    return len(pat) == len(top)


@pytest.mark.parametrize("pattern", ["a.**", "a.*.**", "**", "a.**.z", "**.z", "a.**.b.**"])
@pytest.mark.parametrize(
    "topic", ["a", "z", "a.z", "a.b", "a.b.z", "a.b.c.z", "a.b.b", "x.a.z", "a.z.b", "b.z"]
)
def test_plan_covers_exactly_what_the_pattern_matches(pattern: str, topic: str) -> None:
    """Subscribed subjects plus the filter select exactly the topics the pattern matches."""
    plan = plan_subjects(pattern)
    hits = [s for s in plan.subjects if _nats_match(s, topic)]
    assert len(hits) <= 1, "two subjects of one plan overlap: a message would arrive twice"
    selected = bool(hits) and (not plan.needs_filter or topic_matches(pattern, topic))
    assert selected == topic_matches(pattern, topic)


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
        ("nats://h:1?bogus=1", "bogus"),
        ("nats://h:1?ping_interval=soon", "ping_interval"),
        ("nats://h:1?ping_interval=0", "ping_interval"),
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


def test_importing_the_plugin_and_transport_modules_does_not_import_nats() -> None:
    code = (
        "import sys, eventforge_nats.plugin, eventforge_nats.transport, eventforge_nats\n"
        "from eventforge.plugins._registry import registry\n"
        "entry = registry().transport('nats://127.0.0.1:1')\n"
        "assert entry.spec.name == 'nats', entry\n"
        "from eventforge.transports.nats import NatsTransport\n"
        "assert 'nats' not in sys.modules, sorted(m for m in sys.modules if m.startswith('nats'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
