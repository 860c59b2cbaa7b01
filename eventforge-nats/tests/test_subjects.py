"""Topic patterns -> NATS subjects (no broker needed)."""

from __future__ import annotations

import pytest
from eventforge.topics import topic_matches
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
