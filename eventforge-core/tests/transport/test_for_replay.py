"""for_replay: a dead letter goes back without its reason and its last attempt number."""

from __future__ import annotations

from eventforge.message import Message
from eventforge.transport import ATTEMPT_HEADER, DEAD_LETTER_REASON_HEADER, for_replay


def test_replay_strips_the_reason_and_the_attempt_and_keeps_every_other_header() -> None:
    message = Message(
        "jobs.x",
        {"n": 1},
        {DEAD_LETTER_REASON_HEADER: "boom", ATTEMPT_HEADER: 3, "tenant": "acme"},
    )
    assert for_replay(message) is message
    assert message.headers == {"tenant": "acme"}
    assert message.payload == {"n": 1}


def test_replay_of_a_message_without_those_headers_changes_nothing() -> None:
    message = Message("jobs.x", 1, {"tenant": "acme"})
    assert for_replay(message).headers == {"tenant": "acme"}
