"""Mapping eventforge topic patterns onto NATS subjects.

Topics and subjects share their syntax (dot-separated tokens, ``*`` for one token). The one
difference is ``**``, which matches *zero* or more segments, while NATS ``>`` matches one or
more and may only stand last. So:

* no ``**``: the pattern is the subject (``orders.*.created``);
* a trailing ``**``: ``prefix.>`` plus the bare ``prefix`` (``orders.**`` also matches
  ``orders``); ``**`` alone is ``>``;
* a ``**`` elsewhere: the broadest subject that covers it (``prefix.>``, or ``>``) and every
  delivery is filtered with :func:`eventforge.topics.topic_matches`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SubjectPlan", "plan_subjects"]


@dataclass(frozen=True)
class SubjectPlan:
    """The NATS subjects that cover one pattern, and whether deliveries need filtering."""

    pattern: str
    subjects: tuple[str, ...]
    needs_filter: bool


def plan_subjects(pattern: str) -> SubjectPlan:
    """Return the subjects to subscribe for a (validated) topic ``pattern``."""
    segments = pattern.split(".")
    if "**" not in segments:
        return SubjectPlan(pattern, (pattern,), False)
    # Collapse runs of '**': 'a.**.**' means the same as 'a.**'.
    collapsed: list[str] = []
    for segment in segments:
        if segment == "**" and collapsed and collapsed[-1] == "**":
            continue
        collapsed.append(segment)
    first = collapsed.index("**")
    prefix = collapsed[:first]
    if first == len(collapsed) - 1:
        if not prefix:
            return SubjectPlan(pattern, (">",), False)
        bare = ".".join(prefix)
        return SubjectPlan(pattern, (f"{bare}.>", bare), False)
    # '**' followed by more segments: the topic has at least one segment after the prefix.
    broad = f"{'.'.join(prefix)}.>" if prefix else ">"
    return SubjectPlan(pattern, (broad,), True)
