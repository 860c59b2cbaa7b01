"""Which exchange a topic is published to and a subscription bound to, without a broker:
routes, the default kind, pattern coverage, x-match arguments and valid AMQP names."""

from __future__ import annotations

import pytest
from eventforge.errors import ConfigurationError
from eventforge_amqp._exchanges import Exchanges
from eventforge_amqp._settings import parse_settings
from eventforge_amqp._topology import covers, group_queue_name, header_arguments, valid_name


def exchanges(url: str = "amqp://h", **options: object) -> Exchanges:
    return Exchanges(parse_settings(url, dict(options)).options)


def test_exchange_names_follow_the_topic_exchange_unless_given() -> None:
    assert exchanges(exchange="events").names == {
        "topic": "events",
        "fanout": "events.fanout",
        "headers": "events.headers",
    }
    assert exchanges(fanout_exchange="bus", headers_exchange="amq.match").names["fanout"] == "bus"


def test_routes_from_the_url_pick_the_exchange_of_each_topic_first_match_wins() -> None:
    e = exchanges("amqp://h?routes=alerts.disk=topic,alerts.**=fanout,reports.*=headers")
    assert e.exchange_for("alerts.disk") == "eventforge"
    assert e.exchange_for("alerts.cpu.high") == "eventforge.fanout"
    assert e.exchange_for("reports.weekly") == "eventforge.headers"
    assert e.exchange_for("reports.weekly.pdf") == "eventforge"
    assert e.publish_kinds() == ["topic", "fanout", "headers"]


def test_routes_as_a_keyword_mapping_and_the_default_kind() -> None:
    e = exchanges(exchange_type="fanout", routes={"rpc.**": "topic"})
    assert e.exchange_for("anything") == "eventforge.fanout"
    assert e.exchange_for("rpc.add") == "eventforge"
    assert e.kind_for("rpc.*") == "topic"
    assert e.kind_for("**") == "fanout"  # not covered by the route: the default kind
    assert e.kind_for("rpc.*", "headers") == "headers"


@pytest.mark.parametrize(
    ("routes", "reason"),
    [
        ("alerts.**=direct", "topic, fanout, headers"),
        ("alerts.**", "pattern=kind"),
        ("alerts..x=fanout", "alerts..x"),
    ],
)
def test_bad_routes_are_refused_with_the_reason(routes: str, reason: str) -> None:
    with pytest.raises(ConfigurationError, match="routes") as info:
        parse_settings(f"amqp://h?routes={routes}", {})
    assert reason in str(info.value)


def test_exchange_names_must_be_valid_amqp_names() -> None:
    with pytest.raises(ConfigurationError, match="fanout_exchange"):
        parse_settings("amqp://h", {"fanout_exchange": "fan*out"})
    with pytest.raises(ConfigurationError, match="exchange_type"):
        parse_settings("amqp://h?exchange_type=direct", {})


@pytest.mark.parametrize(
    ("route", "pattern", "expected"),
    [
        ("alerts.**", "alerts.*.disk", True),
        ("alerts.**", "alerts", True),
        ("alerts.**", "alerts.**", True),
        ("alerts.*", "alerts.disk", True),
        ("alerts.*", "alerts.*", True),
        ("alerts.*", "alerts.**", False),
        ("alerts.disk", "alerts.*", False),
        ("**", "anything.at.**", True),
        ("a.**.z", "a.b.*.z", True),
        ("a.**.z", "a.b.**", False),
    ],
)
def test_a_route_covers_a_pattern_only_when_it_matches_all_its_topics(
    route: str, pattern: str, expected: bool
) -> None:
    assert covers(route, pattern) is expected


def test_bindings_per_kind() -> None:
    e = exchanges(routes="alerts.**=fanout")
    topic = e.binding("orders.**")
    assert (topic.exchange, topic.routing_key, topic.arguments) == ("eventforge", "orders.#", None)
    fanout = e.binding("alerts.disk")
    assert (fanout.exchange, fanout.routing_key) == ("eventforge.fanout", "")
    everything = e.binding("x", "headers", match_mode="any")
    assert everything.arguments == {"x-match": "all"}  # no match: every message
    headers = e.binding("reports.**", match={"format": "pdf"}, match_mode="any")
    assert (headers.kind, headers.arguments) == ("headers", {"x-match": "any", "format": "pdf"})


def test_match_values_are_checked_up_front() -> None:
    e = exchanges()
    with pytest.raises(ValueError, match="match_mode"):
        e.binding("r", match={"a": 1}, match_mode="most")
    with pytest.raises(TypeError, match="header values"):
        e.binding("r", match={"a": [1]})


def test_x_prefixed_header_names_use_the_with_x_match_modes() -> None:
    assert header_arguments({"x-tenant": "a"}, "all") == {"x-match": "all-with-x", "x-tenant": "a"}
    assert header_arguments({"tenant": "a"}, "any") == {"x-match": "any", "tenant": "a"}


def test_group_queue_names_are_valid_amqp_names_and_distinct_per_pattern_and_match() -> None:
    assert group_queue_name("ef", "g", "orders.new") == "ef.group.g.orders.new"
    names = {
        group_queue_name("ef", "g", "orders.*"),
        group_queue_name("ef", "g", "orders.**"),
        group_queue_name("ef", "g", "orders.+"),
        group_queue_name("ef", "g", "r", {"x-match": "all", "a": 1}),
        group_queue_name("ef", "g", "r", {"x-match": "any", "a": 1}),
        group_queue_name("ef", "g", "x" * 300),
    }
    assert len(names) == 6
    assert all(valid_name(name) for name in names)
