"""Topics and patterns: validation, matching, and the TopicIndex trie, checked against a reference."""

from __future__ import annotations

import re
import threading

import pytest
from eventforge.topics import (
    TopicIndex,
    has_wildcards,
    topic_matches,
    validate_pattern,
    validate_topic,
)
from hypothesis import given, settings
from hypothesis import strategies as st


def reference_matches(pattern: str, topic: str) -> bool:
    """An independent matcher: the pattern becomes a regular expression over ``"." + topic``.

    ``*`` is one segment (``\\.[^.]+``), ``**`` zero or more (``(?:\\.[^.]+)*``).
    """
    parts = []
    for segment in pattern.split("."):
        if segment == "**":
            parts.append(r"(?:\.[^.]+)*")
        elif segment == "*":
            parts.append(r"\.[^.]+")
        else:
            parts.append(r"\." + re.escape(segment))
    return re.fullmatch("".join(parts), "." + topic) is not None


segments = st.sampled_from(["a", "b", "c", "orders", "eu"])
topic_strategy = st.lists(segments, min_size=1, max_size=6).map(".".join)
pattern_strategy = st.lists(
    st.sampled_from(["a", "b", "c", "orders", "*", "**"]), min_size=1, max_size=6
).map(".".join)


@settings(max_examples=1000, deadline=None)
@given(pattern=pattern_strategy, topic=topic_strategy)
def test_topic_matches_agrees_with_reference(pattern: str, topic: str) -> None:
    assert topic_matches(pattern, topic) == reference_matches(pattern, topic)


@settings(max_examples=300, deadline=None)
@given(
    patterns=st.lists(pattern_strategy, min_size=1, max_size=12),
    topics=st.lists(topic_strategy, min_size=1, max_size=8),
    removed=st.sets(st.integers(min_value=0, max_value=11)),
)
def test_topic_index_agrees_with_reference(
    patterns: list[str], topics: list[str], removed: set[int]
) -> None:
    index: TopicIndex[int] = TopicIndex()
    keys = [index.add(pattern, n) for n, pattern in enumerate(patterns)]
    for topic in topics:  # warm the cache, so removal must invalidate it
        index.match(topic)
    for n in sorted(removed):
        if n < len(keys):
            assert index.remove(keys[n]) is True
            assert index.remove(keys[n]) is False
    live = [n for n in range(len(patterns)) if n not in removed]
    assert len(index) == len(live)
    for topic in topics:
        expected = tuple(n for n in live if reference_matches(patterns[n], topic))
        assert index.match(topic) == expected  # registration order


# Literal segments with punctuation (legal in topics) and near-misses of one another: a matcher
# that treated any of them as syntax (a regular expression, a glob, a prefix test) would differ.
punctuated = st.sampled_from(
    [
        "a",
        "a-b",
        "a_b",
        "$sys",
        "a+",
        "a|b",
        "(a)",
        "a{2}",
        "^a$",
        "%",
        "#",
        "a/b",
        "ab",
        "ü",
        "a,b",
    ]
)
punctuated_topics = st.lists(punctuated, min_size=1, max_size=5).map(".".join)
punctuated_patterns = st.lists(
    st.one_of(punctuated, st.sampled_from(["*", "**"])), min_size=1, max_size=5
).map(".".join)


@settings(max_examples=300, deadline=None)
@given(pattern=punctuated_patterns, topic=punctuated_topics)
def test_punctuation_in_literal_segments_matches_only_itself(pattern: str, topic: str) -> None:
    assert validate_topic(topic) == topic
    assert validate_pattern(pattern) == pattern
    expected = reference_matches(pattern, topic)
    assert topic_matches(pattern, topic) == expected
    index: TopicIndex[str] = TopicIndex()
    index.add(pattern, "sub")
    assert index.match(topic) == (("sub",) if expected else ())


# The routing example of the EventBusClient seed (RabbitMQ topic exchange, "#" = zero or more
# words), translated to our syntax ("#" -> "**"), plus the cases its prose implies.
SEED_ROUTING_TABLE = [
    ("sensor.*.temperature", "sensor.living_room.temperature", True),
    ("sensor.**", "sensor.living_room.temperature", True),
    ("sensor.living_room.*", "sensor.living_room.temperature", True),
    ("*.*.temperature", "sensor.living_room.temperature", True),
    ("sensor.bedroom.temperature", "sensor.living_room.temperature", False),
    ("orders.*", "orders.created", True),
    ("orders.*", "orders.shipped", True),
    ("orders.created", "orders.created", True),
    ("orders.created", "orders.shipped", False),
    ("sensor.*.temperature", "sensor.kitchen.humidity", False),
    ("general.*", "general.status", True),
    ("test.start", "test.start", True),
    ("my.topic", "my.topic", True),
    # "#" and "*" edge cases of topic exchanges
    ("sensor.**", "sensor", True),
    ("orders.*", "orders", False),
    ("orders.*", "orders.eu.created", False),
    ("**", "anything.at.all", True),
    ("**", "one", True),
    ("*", "one", True),
    ("*", "one.two", False),
    ("**.temperature", "temperature", True),
    ("**.temperature", "sensor.kitchen.temperature", True),
    ("sensor.**.temperature", "sensor.temperature", True),
    ("sensor.**.temperature", "sensor.a.b.c.temperature", True),
    ("sensor.**.temperature", "sensor.a.humidity", False),
    ("**.**", "a", True),
    ("*.**", "a", True),
    ("**.*", "a", True),
    ("*.*.**", "a", False),
]


@pytest.mark.parametrize(("pattern", "topic", "expected"), SEED_ROUTING_TABLE)
def test_seed_routing_table(pattern: str, topic: str, expected: bool) -> None:
    assert topic_matches(pattern, topic) is expected
    assert reference_matches(pattern, topic) is expected
    index: TopicIndex[str] = TopicIndex()
    index.add(pattern, "sub")
    assert index.match(topic) == (("sub",) if expected else ())


# -- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "message"),
    [
        ("", "topic must not be empty"),
        ("a..b", "topic 'a..b' has an empty segment at position 1"),
        (".a", "has an empty segment at position 0"),
        ("a.", "has an empty segment at position 1"),
        ("a.*", "contains the wildcard '*': wildcards are for subscriptions"),
        ("a.**.b", "contains the wildcard '**'"),
        ("a b", "contains ' ' in segment 'a b'"),
        ("a.\tb", "contains '\\t'"),
        ("a*", "contains '*' in segment 'a*'"),
        ("a.b>", "contains '>'"),
        ("a?", "contains '?'"),
        ("x" * 1025, "1025 characters long; the limit is 1024"),
    ],
)
def test_invalid_topics_are_explained(topic: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        validate_topic(topic)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("", "topic pattern must not be empty"),
        ("a..b", "topic pattern 'a..b' has an empty segment at position 1"),
        ("a*", "wildcards must stand alone as a whole segment ('a.*', not 'a*')"),
        ("a.b**", "wildcards must stand alone"),
        ("a.*b", "contains '*' in segment '*b'"),
        ("a. b", "contains ' '"),
        ("a.***", "contains '*'"),
        # a wildcard does not excuse what follows it
        ("orders.*.bad seg", "contains ' ' in segment 'bad seg'"),
        ("a.**.x>y", "contains '>' in segment 'x>y'"),
        ("*.a?", "contains '?' in segment 'a?'"),
        ("**.a..b", "has an empty segment at position 2"),
        ("a.*.", "has an empty segment at position 2"),
        ("x" * 1025, "1025 characters long; the limit is 1024"),
    ],
)
def test_invalid_patterns_are_explained(pattern: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        validate_pattern(pattern)
    assert message in str(info.value)


def test_non_strings_raise_type_error() -> None:
    with pytest.raises(TypeError, match="topic must be a str, got int"):
        validate_topic(5)
    with pytest.raises(TypeError, match="topic pattern must be a str, got bytes"):
        validate_pattern(b"a.b")
    with pytest.raises(TypeError, match="topic must be a str, got list"):
        validate_topic(["a", "b"])


@pytest.mark.parametrize("topic", ["a", "orders.eu.created", "x-1.y_2.Z3", "ünï.cödé", "a" * 1024])
def test_valid_topics_pass_unchanged(topic: str) -> None:
    assert validate_topic(topic) == topic
    assert validate_topic(topic) == topic  # the cached path
    assert validate_pattern(topic) == topic


@pytest.mark.parametrize("pattern", ["*", "**", "a.*", "a.**", "**.z", "a.*.**.z", "*.*"])
def test_valid_patterns(pattern: str) -> None:
    assert validate_pattern(pattern) == pattern
    assert has_wildcards(pattern)


def test_has_wildcards() -> None:
    assert not has_wildcards("a.b")


def test_validated_topics_are_remembered() -> None:
    from eventforge import topics

    topics._valid_topics.clear()  # far from the bound, whatever ran before
    validate_topic("remembered.one")
    validate_topic("remembered.two")
    assert {"remembered.one", "remembered.two"} <= topics._valid_topics


def test_validate_topic_cache_is_bounded() -> None:
    from eventforge import topics

    for n in range(topics._VALID_CACHE_LIMIT + 10):
        validate_topic(f"bounded.t{n}")
        assert len(topics._valid_topics) <= topics._VALID_CACHE_LIMIT


# -- TopicIndex --------------------------------------------------------------------------------


def test_index_match_cache_is_bounded() -> None:
    index: TopicIndex[str] = TopicIndex()
    index.add("t.*", "sub")
    index.match("t.a")
    index.match("t.b")
    assert set(index._cache) == {"t.a", "t.b"}  # remembered until the bound is reached
    for n in range(TopicIndex._CACHE_LIMIT + 5):
        assert index.match(f"t.{n}") == ("sub",)
        assert len(index._cache) <= TopicIndex._CACHE_LIMIT
    assert index.match("t.0") == ("sub",)


def test_index_returns_values_in_registration_order() -> None:
    index: TopicIndex[str] = TopicIndex()
    index.add("a.**", "deep")
    index.add("a.b", "exact")
    index.add("a.*", "star")
    index.add("x.y", "other")
    assert index.match("a.b") == ("deep", "exact", "star")
    assert index.match("a") == ("deep",)
    assert index.match("x.y") == ("other",)
    assert index.match("nope") == ()


def test_index_same_pattern_twice_gives_two_values() -> None:
    index: TopicIndex[str] = TopicIndex()
    first = index.add("a.b", "one")
    index.add("a.b", "two")
    assert index.match("a.b") == ("one", "two")
    assert index.remove(first)
    assert index.match("a.b") == ("two",)


def test_index_cache_sees_additions_and_removals() -> None:
    index: TopicIndex[str] = TopicIndex()
    assert index.match("a.b") == ()
    key = index.add("a.*", "v")
    assert index.match("a.b") == ("v",)
    index.remove(key)
    assert index.match("a.b") == ()


def test_index_prunes_empty_branches() -> None:
    index: TopicIndex[str] = TopicIndex()
    keys = [index.add(p, p) for p in ("a.b.c", "a.b.d", "a.**", "x")]
    for key in keys:
        index.remove(key)
    assert index._root.children == {}
    assert list(index.patterns()) == []
    assert len(index) == 0


def test_index_patterns_snapshot() -> None:
    index: TopicIndex[str] = TopicIndex()
    key = index.add("a.*", "v")
    assert list(index.patterns()) == [(key, "a.*")]


def test_index_is_consistent_under_concurrent_changes() -> None:
    index: TopicIndex[int] = TopicIndex()
    stable = index.add("s.**", -1)
    errors: list[BaseException] = []

    def churn(worker: int) -> None:
        try:
            for n in range(300):
                key = index.add(f"s.w{worker}.*", n)
                assert -1 in index.match(f"s.w{worker}.x")
                assert index.remove(key)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(index) == 1
    assert index.match("s.w0.x") == (-1,)
    assert index.remove(stable)


def test_overlapping_double_wildcards_do_not_backtrack_exponentially(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A long topic against a pattern with many ``**``: the trie does bounded work.

    Counted in trie visits, not seconds: with backtracking this topic needs millions.
    """
    pattern = ".".join(["**", "a"] * 5 + ["b"])
    topic = ".".join(["a"] * 200)
    assert topic_matches(pattern, topic) is False
    assert topic_matches(pattern, topic + ".b") is True
    index: TopicIndex[int] = TopicIndex()
    index.add(pattern, 1)
    visits = 0
    collect = TopicIndex._collect

    def counting(self: TopicIndex[int], *args: object) -> None:
        nonlocal visits
        visits += 1
        collect(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(TopicIndex, "_collect", counting)
    assert index.match(topic) == ()
    assert index.match(topic + ".b") == (1,)
    nodes, positions = 12, 202
    assert visits <= 2 * nodes * positions
