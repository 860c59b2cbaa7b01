"""``eventforge publish / subscribe / request / call`` against a real TCP hub in this process.

The command runs in-process (``main([...])``) as a TCP client of a ``TCPServerTransport`` that
the test owns, so each verb crosses a real socket; exit codes are those of ``EXIT_CODES``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest
from eventforge import Message, MessageQueue, RPCServer
from eventforge.cli import EXIT_CODES, main
from eventforge.testing import wait_until

TCPServerTransport = pytest.importorskip("eventforge_tcp").TCPServerTransport


@pytest.fixture
def hub() -> Iterator[tuple[MessageQueue, str]]:
    server = TCPServerTransport("127.0.0.1", 0).start()
    queue = MessageQueue(transport=server)

    @queue.on("math.add")
    def add(message: Message) -> None:
        queue.reply(message, message.payload["a"] + message.payload["b"])

    rpc = RPCServer(queue, service_name="calculator")

    @rpc.register()
    def divide(a: float, b: float) -> float:
        return a / b

    rpc.serve(blocking=False)
    yield queue, f"tcp://127.0.0.1:{server.port}"
    rpc.stop()
    queue.close()


def test_exit_codes_are_documented() -> None:
    assert set(EXIT_CODES) == {0, 1, 2, 3, 4}


def test_publish_delivers_json_payload_and_headers(
    hub: tuple[MessageQueue, str], capsys: pytest.CaptureFixture[str]
) -> None:
    queue, url = hub
    got: list[Message] = []
    queue.subscribe("orders.created", got.append)
    code = main(["publish", "orders.created", '{"id": 7}', "-H", "tenant=eu", "-t", url])
    assert code == 0
    assert wait_until(lambda: len(got) == 1, timeout=5)
    assert got[0].payload == {"id": 7}
    assert got[0].headers["tenant"] == "eu"
    assert capsys.readouterr().out.strip() == got[0].id


def test_payload_that_is_not_json_is_a_usage_error_naming_the_fix(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["publish", "greetings", "hello"])
    assert exit_info.value.code == 2
    assert "write a string in JSON quotes: '\"hello\"'" in capsys.readouterr().err


def test_request_prints_the_reply_payload(
    hub: tuple[MessageQueue, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, url = hub
    assert main(["request", "math.add", '{"a": 10, "b": 20}', "-t", url]) == 0
    assert json.loads(capsys.readouterr().out) == 30


def test_request_nobody_answers_exits_1(
    hub: tuple[MessageQueue, str], capsys: pytest.CaptureFixture[str]
) -> None:
    hub_queue, url = hub
    # Nobody subscribed: known at once.
    assert main(["request", "math.nobody", "--timeout", "5", "-t", url]) == 1
    assert "no responders for 'math.nobody'" in capsys.readouterr().err
    # Subscribed but silent: the timeout.
    hub_queue.subscribe("math.silent", lambda message: None)
    assert main(["request", "math.silent", "--timeout", "0.2", "-t", url]) == 1
    assert "no reply to the request on 'math.silent'" in capsys.readouterr().err


def test_call_prints_the_result_and_maps_remote_errors_to_3(
    hub: tuple[MessageQueue, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, url = hub
    assert main(["call", "calculator", "divide", "10", "4", "-t", url]) == 0
    assert json.loads(capsys.readouterr().out) == 2.5
    assert main(["call", "calculator", "divide", "1", "0", "-t", url]) == 3
    assert "ZeroDivisionError" in capsys.readouterr().err
    assert main(["call", "calculator", "nope", "-t", url]) == 3
    assert main(["call", "calculator", "divide", "--kwargs", '{"a": 9, "b": 3}', "-t", url]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == 3.0


def test_subscribe_prints_json_lines_until_count(
    hub: tuple[MessageQueue, str], capsys: pytest.CaptureFixture[str]
) -> None:
    queue, url = hub
    codes: list[int] = []
    argv = ["subscribe", "jobs.*", "--count", "2", "--timeout", "10", "-t", url]
    runner = threading.Thread(target=lambda: codes.append(main(argv)))
    runner.start()
    sent = 0
    # the subscription reaches the hub a moment after the command starts: publish until it ends
    while runner.is_alive() and sent < 200:
        queue.publish(f"jobs.n{sent}", {"n": sent})
        sent += 1
        runner.join(0.05)
    assert codes == [0]
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2
    assert all(line["topic"].startswith("jobs.n") for line in lines)
    assert lines[1]["payload"]["n"] == lines[0]["payload"]["n"] + 1


def test_subscribe_timeout_before_count_exits_1(hub: tuple[MessageQueue, str]) -> None:
    _, url = hub
    assert main(["subscribe", "quiet.*", "--count", "1", "--timeout", "0.2", "-t", url]) == 1


def test_unreachable_transport_exits_4(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["publish", "a.b", "1", "-t", "tcp://127.0.0.1:1?connect_timeout=0.5"])
    assert code == 4, capsys.readouterr().err


def test_unknown_transport_exits_2_naming_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["publish", "a.b", "1", "-t", "kafka://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "kafka" in err
    assert "Unknown transport" in err
