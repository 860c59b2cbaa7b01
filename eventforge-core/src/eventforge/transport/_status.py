"""What a transport can tell about one of its subscriptions: the answer of
:meth:`Transport.subscription_status`.

A service's health checks ask it every probe interval (never on the delivery path), so an
implementation may ask the broker.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SubscriptionStatus"]


@dataclass(frozen=True)
class SubscriptionStatus:
    """One subscription as its transport sees it now.

    ``present``: the subscription is registered with the transport and, where the transport
    asks its broker or store, the broker still holds it (its queue, consumer group or named
    inbox exists). ``problem``: when it is not present or not consuming, a sentence saying
    what is wrong. ``lost``: how many times the broker dropped it and the transport made it
    again on its own (a queue deleted, a consumer group destroyed); what was published
    meanwhile was not delivered to it. ``backlog``: the messages the broker holds for it,
    where the broker knows.
    """

    present: bool
    problem: str | None = None
    lost: int = 0
    backlog: int | None = None
