"""The shared transport kit: Backoff, Counter, the option table and its converters."""

from __future__ import annotations

import threading

import pytest
from eventforge.errors import ConfigurationError
from eventforge.transport import (
    Backoff,
    Counter,
    DeliveryThread,
    Option,
    OptionTable,
    to_bool,
    to_float,
    to_int,
    to_seconds,
)


def test_backoff_without_jitter_doubles_from_initial_and_stops_at_the_cap() -> None:
    curve = Backoff(initial=0.1, cap=1.0, multiplier=2.0, jitter=0)
    assert [curve.delay(n) for n in range(1, 7)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_backoff_treats_attempt_zero_as_the_first_retry() -> None:
    assert Backoff(initial=0.3, jitter=0).delay(0) == pytest.approx(0.3)


def test_backoff_jitter_only_lengthens_a_delay_and_never_passes_the_cap() -> None:
    curve = Backoff(initial=1.0, cap=1.5, multiplier=2.0, jitter=0.5)
    firsts = [curve.delay(1) for _ in range(500)]
    assert all(1.0 <= d <= 1.5 for d in firsts)
    assert max(firsts) > 1.0
    assert all(curve.delay(5) == 1.5 for _ in range(50))


def test_backoff_survives_huge_attempt_numbers_at_its_cap() -> None:
    assert Backoff(initial=1.0, cap=7.0, jitter=0).delay(100_000) == 7.0


def test_backoff_delays_is_the_curve_in_order() -> None:
    delays = Backoff(initial=1.0, cap=100.0, multiplier=3.0, jitter=0).delays()
    assert [next(delays) for _ in range(4)] == [1.0, 3.0, 9.0, 27.0]


@pytest.mark.parametrize(
    "kwargs",
    [{"initial": -1}, {"cap": -0.5}, {"multiplier": 0.5}, {"jitter": 1.5}, {"jitter": -0.1}],
)
def test_backoff_refuses_nonsense_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)


def test_counter_counts_bumps_from_many_threads_exactly() -> None:
    counter = Counter()

    def bump() -> None:
        for _ in range(10_000):
            counter.bump()

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counter.value == 40_000
    assert repr(counter) == "Counter(40000)"


@pytest.mark.parametrize("text", ["1", "true", "YES", "On", True])
def test_to_bool_reads_every_true_spelling(text: str | bool) -> None:
    assert to_bool(text) is True


@pytest.mark.parametrize("text", ["0", "false", "No", "OFF", False])
def test_to_bool_reads_every_false_spelling(text: str | bool) -> None:
    assert to_bool(text) is False


def test_to_bool_refuses_other_words_naming_the_accepted_ones() -> None:
    with pytest.raises(ValueError, match="1/true/yes/on"):
        to_bool("maybe")


def test_number_converters_refuse_what_they_cannot_read_exactly() -> None:
    assert to_int("12") == 12
    assert to_float("2.5") == 2.5
    assert to_seconds("0") == 0.0
    for bad in (lambda: to_int(1.5), lambda: to_int(True), lambda: to_float(True)):
        with pytest.raises(ValueError):
            bad()
    with pytest.raises(ValueError, match=">= 0"):
        to_seconds("-1")
    with pytest.raises(ValueError):
        to_seconds("nan")


TABLE = OptionTable(
    "demo",
    Option("db", to_int, 0),
    Option("tls", to_bool, False),
    Option("token", str, None, secret=True),
)


def test_option_table_fills_defaults_then_url_then_keywords() -> None:
    values = TABLE.read("demo://host/?db=3&tls=on", {"tls": False})
    assert values == {"db": 3, "tls": False, "token": None}


def test_option_table_names_an_unknown_option_and_the_accepted_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown demo option 'dbb'.*db, tls, token") as e:
        TABLE.read("demo://host/?dbb=1")
    assert e.value.key == "transport.dbb"
    with pytest.raises(ConfigurationError, match="given as a keyword"):
        TABLE.read(None, {"nope": 1})


def test_option_table_refuses_an_option_given_twice_in_a_url() -> None:
    with pytest.raises(ConfigurationError, match="given twice"):
        TABLE.read("demo://host/?db=1&db=2")


def test_option_table_reports_a_bad_value_without_echoing_a_secret() -> None:
    with pytest.raises(ConfigurationError, match=r"db='x'.*invalid") as e:
        TABLE.read("demo://user:pw@host/?db=x")
    assert "pw" not in str(e.value)

    def strict(text: str) -> str:
        raise ValueError("too short")

    secret_table = OptionTable("demo", Option("token", strict, secret=True))
    with pytest.raises(ConfigurationError, match=r"token=\*\*\*") as e:
        secret_table.read("demo://h/?token=hunter2")
    assert "hunter2" not in str(e.value)


def test_option_table_treats_a_none_keyword_as_not_given() -> None:
    assert TABLE.read(None, {"db": None})["db"] == 0


def test_option_table_refuses_repeated_declarations() -> None:
    with pytest.raises(ValueError, match="repeat"):
        OptionTable("demo", Option("a"), Option("a"))


def test_delivery_thread_runs_items_in_order_drops_past_its_bound_and_drains_on_stop() -> None:
    seen: list[int] = []
    gate = threading.Event()

    def handle(n: int) -> None:
        gate.wait(5)
        seen.append(n)

    thread = DeliveryThread("test-delivery", handle, max_pending=3)
    assert thread.put((0,))
    while thread.depth():  # the first item is taken and waits on the gate
        pass
    assert [thread.put((n,)) for n in (1, 2, 3, 4)] == [True, True, True, False]
    assert thread.dropped == 1
    assert not thread.in_thread()
    gate.set()
    thread.stop()
    assert seen == [0, 1, 2, 3]
