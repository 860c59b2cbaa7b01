"""Which exchange a topic is published to and a subscription is bound to.

A transport knows three exchanges, one per kind (options ``exchange``, ``fanout_exchange``,
``headers_exchange``). A topic's kind is the first of the ``routes`` whose pattern matches it,
else ``exchange_type`` (``topic`` unless set), and both sides use it: a publish on the topic goes
to that kind's exchange, and a subscription whose pattern a route covers is bound there (a
subscription may also name its kind). So a publisher and a subscriber configured alike always
meet on the same exchange, as with EventBusClient's one ``exchange_handler`` per client, while
one connection can still mix kinds per topic.

On a fanout or headers exchange the topic does not route, as in RabbitMQ: a fanout
subscription receives every message published to the fanout exchange, a headers subscription
every one whose headers match its ``x-match`` binding, whatever their topics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiormq.abc
import aiormq.exceptions
from eventforge.errors import ConfigurationError
from eventforge.queue import check_match
from eventforge.topics import topic_matches

from ._topology import binding_key, conflict_error, covers, exchange_kind, header_arguments

__all__ = ["OPTION_OF_KIND", "Binding", "Exchanges"]

OPTION_OF_KIND = {"topic": "exchange", "fanout": "fanout_exchange", "headers": "headers_exchange"}
_CACHE_LIMIT = 4096


@dataclass(frozen=True)
class Binding:
    """Where one subscription's queue is bound: exchange, binding key and arguments."""

    kind: str
    exchange: str
    routing_key: str
    arguments: dict[str, Any] | None


class Exchanges:
    """The exchange names of one transport and the rule that picks one per topic."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        topic = options["exchange"]
        self.names: dict[str, str] = {
            "topic": topic,
            "fanout": options["fanout_exchange"] or f"{topic}.fanout",
            "headers": options["headers_exchange"] or f"{topic}.headers",
        }
        self.default: str = options["exchange_type"]
        self.routes: tuple[tuple[str, str], ...] = options["routes"]
        self._default_name: str = self.names[self.default]
        self._by_topic: dict[str, str] = {}

    def publish_kinds(self) -> list[str]:
        """The kinds a publish may go to: the default, then those the routes name."""
        return list(dict.fromkeys([self.default, *(kind for _, kind in self.routes)]))

    def exchange_for(self, topic: str) -> str:
        """The exchange a message on ``topic`` is published to."""
        if not self.routes:
            return self._default_name
        name = self._by_topic.get(topic)
        if name is None:
            kind = self.default
            for pattern, route_kind in self.routes:
                if topic_matches(pattern, topic):
                    kind = route_kind
                    break
            name = self.names[kind]
            if len(self._by_topic) >= _CACHE_LIMIT:
                self._by_topic.clear()
            self._by_topic[topic] = name
        return name

    def kind_for(self, pattern: str, requested: str | None = None) -> str:
        """The kind a subscription to ``pattern`` binds to: ``requested``, else the first route
        that covers every topic of ``pattern``, else the default."""
        if requested is not None:
            try:
                return exchange_kind(requested)
            except ValueError as exc:
                raise ConfigurationError(f"exchange_type: {exc}", key="exchange_type") from None
        route = self._route_covering(pattern)
        return route[1] if route is not None else self.default

    def _route_covering(self, pattern: str) -> tuple[str, str] | None:
        for route in self.routes:
            if covers(route[0], pattern):
                return route
        return None

    def binding(
        self,
        pattern: str,
        requested: str | None = None,
        match: Mapping[str, Any] | None = None,
        match_mode: str = "all",
    ) -> Binding:
        """Where a subscription to ``pattern`` is bound.

        ``match`` binds to the headers exchange, where the broker compares the headers; it
        is refused with an explicit ``requested`` kind or a route of another kind.
        """
        if match is None:
            if match_mode not in ("all", "any"):
                raise ValueError(f"match_mode must be 'all' or 'any', got {match_mode!r}")
            kind = self.kind_for(pattern, requested)
            exchange = self.names[kind]
            if kind == "topic":
                return Binding(kind, exchange, binding_key(pattern), None)
            if kind == "fanout":
                return Binding(kind, exchange, "", None)
            return Binding(kind, exchange, "", header_arguments(None, "all"))  # every message
        check_match(match, match_mode)
        route = self._route_covering(pattern)
        if requested is not None:
            kind, why = self.kind_for(pattern, requested), f"exchange_type={requested!r}"
        elif route is not None:
            kind, why = route[1], f"the route {route[0]}={route[1]}"
        else:
            kind, why = "headers", ""
        if kind != "headers":
            raise ConfigurationError(
                f"match= is applied by the broker on the headers exchange, but {why} binds "
                f"{pattern!r} to the {kind} exchange {self.names[kind]!r}. Drop it (and "
                "publish those topics to the headers exchange, with a route such as "
                f"'{pattern}=headers'), or filter in the subscribing queue with "
                "MessageQueue.subscribe(..., match=...)",
                key="match",
            )
        return Binding(kind, self.names[kind], "", header_arguments(match, match_mode))

    async def declare(self, channel: aiormq.abc.AbstractChannel, kind: str) -> None:
        """Declare the exchange of ``kind`` (durable; idempotent).

        A name starting with ``amq.`` is one of the broker's own (``amq.fanout``,
        ``amq.headers``...): it is only checked to exist, since the broker refuses to declare it.
        """
        name = self.names[kind]
        option = OPTION_OF_KIND[kind]
        try:
            if name.startswith("amq."):
                await channel.exchange_declare(name, passive=True)
            else:
                await channel.exchange_declare(name, exchange_type=kind, durable=True)
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise conflict_error(
                "exchange",
                name,
                exc,
                {"type": kind, "durable": True},
                rename=f"set option {option} to another name",
            ) from None
        except aiormq.exceptions.ChannelNotFoundEntity:
            raise ConfigurationError(
                f"exchange {name!r} (option {option}) does not exist; eventforge does not "
                "declare names starting with 'amq.' (the broker reserves them): use one the "
                "broker has (amq.topic, amq.fanout, amq.headers, amq.match) or another name",
                key=option,
            ) from None

    async def declare_for_publishing(self, channel: aiormq.abc.AbstractChannel) -> None:
        """Declare every exchange a publish may go to."""
        for kind in self.publish_kinds():
            await self.declare(channel, kind)
