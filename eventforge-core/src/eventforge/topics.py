"""Topics and topic patterns.

A topic is a dot-separated list of non-empty segments (``orders.eu.created``). A pattern may
use two wildcards, each as a whole segment: ``*`` matches exactly one segment and ``**``
matches zero or more. Segments may not contain whitespace or any of ``* > ? [ ] \\`` so that
every topic maps onto Redis channels and NATS subjects unchanged.

:class:`TopicIndex` is the subscription index: a trie keyed by segment, so the cost of finding
the subscribers of a topic depends on the subscriptions that match, not on how many exist.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping, Set
from typing import Generic, TypeVar

__all__ = [
    "TopicIndex",
    "has_wildcards",
    "known_topics",
    "topic_matches",
    "validate_pattern",
    "validate_topic",
]

T = TypeVar("T")

_BAD_CHARS = re.compile(r"[\s*>?\[\]\\]")
_MAX_TOPIC_LENGTH = 1024


def _check_common(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{what} must not be empty")
    if len(value) > _MAX_TOPIC_LENGTH:
        raise ValueError(
            f"{what} is {len(value)} characters long; the limit is {_MAX_TOPIC_LENGTH}"
        )
    return value


_valid_topics: set[str] = set()
_VALID_CACHE_LIMIT = 8192

known_topics: Set[str] = _valid_topics
"""Topics that already passed :func:`validate_topic` (a bounded set, cleared when full).

``topic in known_topics`` proves ``topic`` valid without a call; on a miss call
:func:`validate_topic`. Read it; never add to it.
"""


def validate_topic(topic: object) -> str:
    """Return ``topic`` if it is a valid concrete topic (no wildcards), else raise ``ValueError``.

    Topics that passed once are remembered (up to a bound), so validating on every publish
    costs one set lookup.
    """
    if topic.__class__ is str and topic in _valid_topics:
        return topic
    text = _check_common(topic, "topic")
    for index, segment in enumerate(text.split(".")):
        if not segment:
            raise ValueError(
                f"topic {text!r} has an empty segment at position {index}: "
                "segments are separated by single dots and may not be empty"
            )
        if segment in ("*", "**"):
            raise ValueError(
                f"topic {text!r} contains the wildcard {segment!r}: wildcards are for "
                "subscriptions; publish to a concrete topic"
            )
        bad = _BAD_CHARS.search(segment)
        if bad:
            raise ValueError(
                f"topic {text!r} contains {bad.group()!r} in segment {segment!r}: topic segments "
                "may not contain whitespace or any of * > ? [ ] \\"
            )
    if len(_valid_topics) >= _VALID_CACHE_LIMIT:
        _valid_topics.clear()
    _valid_topics.add(text)
    return text


def validate_pattern(pattern: object) -> str:
    """Return ``pattern`` if it is a valid subscription pattern, else raise ``ValueError``."""
    text = _check_common(pattern, "topic pattern")
    for index, segment in enumerate(text.split(".")):
        if not segment:
            raise ValueError(
                f"topic pattern {text!r} has an empty segment at position {index}: "
                "segments are separated by single dots and may not be empty"
            )
        if segment in ("*", "**"):
            continue
        bad = _BAD_CHARS.search(segment)
        if bad:
            hint = (
                "; wildcards must stand alone as a whole segment ('a.*', not 'a*')"
                if bad.group() == "*"
                else ""
            )
            raise ValueError(
                f"topic pattern {text!r} contains {bad.group()!r} in segment {segment!r}: "
                f"segments may not contain whitespace or any of * > ? [ ] \\{hint}"
            )
    return text


def has_wildcards(pattern: str) -> bool:
    """Tell whether ``pattern`` contains a ``*`` or ``**`` segment."""
    return "*" in pattern


def topic_matches(pattern: str, topic: str) -> bool:
    """Tell whether the concrete ``topic`` matches the subscription ``pattern``.

    The cost is at most proportional to the number of pattern segments times the number of
    topic segments, whatever the pattern: a long topic from a remote publisher cannot make a
    pattern with several ``**`` backtrack exponentially.
    """
    if "*" not in pattern:
        return pattern == topic
    return _match(pattern.split("."), topic.split("."))


def _match(pat: list[str], top: list[str]) -> bool:
    # ``positions`` holds every count of topic segments that the pattern prefix seen so far can
    # consume; a NFA simulation rather than backtracking.
    end = len(top)
    positions = {0}
    for seg in pat:
        if seg == "**":
            positions = set(range(min(positions), end + 1))
        elif seg == "*":
            positions = {j + 1 for j in positions if j < end}
        else:
            positions = {j + 1 for j in positions if j < end and top[j] == seg}
        if not positions:
            return False
    return end in positions


class _Node(Generic[T]):
    __slots__ = ("children", "values")

    def __init__(self) -> None:
        self.children: dict[str, _Node[T]] = {}
        self.values: dict[int, T] = {}


class TopicIndex(Generic[T]):
    """A trie from topic patterns to values, answering "which values match this topic?".

    ``match`` results are cached per concrete topic and the cache is cleared on every change,
    so a steady publisher pays one dict lookup no matter how many patterns are registered.
    Thread-safe: changes and cache misses take a lock; a cache hit takes none.

    ``cached`` is that cache, one dict for the index's whole life (it is cleared, never
    replaced): ``index.cached.get(topic)`` is what ``match`` would return, or ``None`` on a
    miss, at the cost of a lookup and no call. Read it; never write to it.
    """

    _CACHE_LIMIT = 4096

    def __init__(self) -> None:
        self._root: _Node[T] = _Node()
        self._patterns: dict[int, str] = {}
        self._cache: dict[str, tuple[T, ...]] = {}
        self.cached: Mapping[str, tuple[T, ...]] = self._cache
        self._next = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._patterns)

    def add(self, pattern: str, value: T) -> int:
        """Register ``value`` under ``pattern``; return a key for :meth:`remove`."""
        with self._lock:
            return self._add(pattern, value)

    def _add(self, pattern: str, value: T) -> int:
        node = self._root
        for segment in pattern.split("."):
            child = node.children.get(segment)
            if child is None:
                child = node.children[segment] = _Node()
            node = child
        self._next += 1
        key = self._next
        node.values[key] = value
        self._patterns[key] = pattern
        self._cache.clear()
        return key

    def remove(self, key: int) -> bool:
        """Remove the value registered under ``key``; return whether it existed."""
        with self._lock:
            return self._remove(key)

    def _remove(self, key: int) -> bool:
        pattern = self._patterns.pop(key, None)
        if pattern is None:
            return False
        path: list[tuple[_Node[T], str]] = []
        node = self._root
        for segment in pattern.split("."):
            path.append((node, segment))
            node = node.children[segment]
        del node.values[key]
        # Prune empty branches so that unsubscribing leaves no residue.
        for parent, segment in reversed(path):
            child = parent.children[segment]
            if child.values or child.children:
                break
            del parent.children[segment]
        self._cache.clear()
        return True

    def match(self, topic: str) -> tuple[T, ...]:
        """Return the values whose pattern matches ``topic``, in registration order."""
        cached = self._cache.get(topic)
        if cached is not None:
            return cached
        with self._lock:
            found: dict[int, T] = {}
            self._collect(self._root, topic.split("."), 0, found, {})
            result = tuple(found[k] for k in sorted(found))
            if len(self._cache) >= self._CACHE_LIMIT:
                self._cache.clear()
            self._cache[topic] = result
            return result

    def _collect(
        self,
        node: _Node[T],
        segments: list[str],
        j: int,
        found: dict[int, T],
        seen: dict[int, int],
    ) -> None:
        # ``seen`` maps a ``**`` node to the lowest position it was entered from: entering it
        # again from a later position covers nothing new. That bounds the work by the trie's
        # size times the topic's length, even when several ``**`` overlap.
        children = node.children
        if j < len(segments):
            exact = children.get(segments[j])
            if exact is not None:
                self._collect(exact, segments, j + 1, found, seen)
            star = children.get("*")
            if star is not None:
                self._collect(star, segments, j + 1, found, seen)
        else:
            found.update(node.values)
        deep = children.get("**")
        if deep is not None:
            stop = seen.get(id(deep), len(segments) + 1)
            if j < stop:
                seen[id(deep)] = j
                for k in range(j, stop):
                    self._collect(deep, segments, k, found, seen)

    def patterns(self) -> Iterator[tuple[int, str]]:
        """Yield ``(key, pattern)`` for every registration (a snapshot)."""
        with self._lock:
            items = list(self._patterns.items())
        yield from items
