"""``eventforge publish | subscribe | request | call``: talk to a transport from a shell.

Each takes the transport with ``-t URL`` (default: ``EVENTFORGE_TRANSPORT`` or the settings
file, as :func:`eventforge.connect`), payloads and arguments as JSON (a string is quoted:
``'"hello"'``) and headers as ``-H key=value``. Results are printed as JSON, one per line;
the exit status says what happened (:data:`~eventforge.cli.EXIT_CODES`).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Callable
from typing import Any

from eventforge.cli._base import command
from eventforge.config import connect
from eventforge.errors import (
    ConfigurationError,
    NoRespondersError,
    PluginImportError,
    PluginNotFoundError,
    RequestTimeout,
    RPCError,
    RPCTimeout,
    ServiceUnavailable,
    TransportError,
)
from eventforge.message import Message
from eventforge.queue import MessageQueue
from eventforge.rpc import RPCClient

__all__: list[str] = []

OK, NO_ANSWER, USAGE, REMOTE_FAILED, TRANSPORT_FAILED = 0, 1, 2, 3, 4


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not JSON ({exc.msg}); write a string in JSON quotes: '\"{text}\"'"
        ) from None


def _header(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"header {text!r} is not key=value")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return key.strip(), parsed if isinstance(parsed, (str, int, float, bool)) else value


def _transport_and_headers(parser: argparse.ArgumentParser, *, headers: bool = True) -> None:
    parser.add_argument(
        "-t",
        "--transport",
        metavar="URL",
        help="transport URL or name (default: EVENTFORGE_TRANSPORT or the settings file)",
    )
    if not headers:
        return
    parser.add_argument(
        "-H",
        "--header",
        dest="headers",
        type=_header,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a message header (repeatable); the value is JSON if it parses, else a string",
    )


def _timeout(parser: argparse.ArgumentParser, default: float | None, what: str) -> None:
    parser.add_argument("--timeout", type=float, default=default, metavar="SECONDS", help=f"{what}")


def _fail(code: int, exc: BaseException) -> int:
    print(f"eventforge: error: {exc}", file=sys.stderr)
    return code


def _with_queue(args: argparse.Namespace, run: Callable[[MessageQueue], int]) -> int:
    """Connect, run, close; map connection and transport failures to their exit codes."""
    try:
        transport = connect(args.transport)
    except (ConfigurationError, PluginNotFoundError, PluginImportError) as exc:
        return _fail(USAGE, exc)
    except (TransportError, OSError) as exc:
        return _fail(TRANSPORT_FAILED, exc)
    queue = MessageQueue(transport=transport)
    try:
        return run(queue)
    except (NoRespondersError, RequestTimeout, RPCTimeout, ServiceUnavailable) as exc:
        return _fail(NO_ANSWER, exc)
    except RPCError as exc:
        return _fail(REMOTE_FAILED, exc)
    except (TransportError, OSError) as exc:
        return _fail(TRANSPORT_FAILED, exc)
    except KeyboardInterrupt:
        return OK
    finally:
        queue.close()
        transport.close()


def _dump(value: Any) -> str:
    return json.dumps(value, default=repr, ensure_ascii=False)


def _message_json(message: Message) -> str:
    return _dump(
        {
            "topic": message.topic,
            "payload": message.payload,
            "headers": message.headers,
            "id": message.id,
        }
    )


def _publish_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("topic", help="the topic to publish on")
    parser.add_argument("payload", type=_json, nargs="?", help="the payload, as JSON")
    _transport_and_headers(parser)


@command("publish", "publish one message; print its id", _publish_arguments)
def _publish(args: argparse.Namespace) -> int:
    def run(queue: MessageQueue) -> int:
        print(queue.publish(args.topic, args.payload, **dict(args.headers)))
        return OK

    return _with_queue(args, run)


def _subscribe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pattern", help="the topic or pattern (* one segment, ** any)")
    parser.add_argument("--count", type=int, metavar="N", help="stop after N messages")
    _timeout(parser, None, "stop after this long (default: until --count or Ctrl-C)")
    _transport_and_headers(parser, headers=False)


@command(
    "subscribe",
    "print each message matching a pattern as a JSON line, as it arrives",
    _subscribe_arguments,
)
def _subscribe(args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 1:
        return _fail(USAGE, ValueError("--count must be at least 1"))
    lock = threading.Lock()
    seen = [0]
    done = threading.Event()

    def on_message(message: Message) -> None:
        with lock:
            if done.is_set():
                return
            print(_message_json(message), flush=True)
            seen[0] += 1
            if args.count is not None and seen[0] >= args.count:
                done.set()

    def run(queue: MessageQueue) -> int:
        queue.subscribe(args.pattern, on_message)
        done.wait(args.timeout)
        with lock:
            done.set()
            return OK if args.count is None or seen[0] >= args.count else NO_ANSWER

    return _with_queue(args, run)


def _request_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("topic", help="the topic a responder listens on")
    parser.add_argument("payload", type=_json, nargs="?", help="the request payload, as JSON")
    _timeout(parser, 5.0, "seconds to wait for the reply (default 5)")
    parser.add_argument(
        "--full", action="store_true", help="print the whole reply message, not its payload"
    )
    _transport_and_headers(parser)


@command("request", "send a request and print the reply's payload", _request_arguments)
def _request(args: argparse.Namespace) -> int:
    def run(queue: MessageQueue) -> int:
        reply = queue.ask(args.topic, args.payload, args.timeout, **dict(args.headers))
        print(_message_json(reply) if args.full else _dump(reply.payload))
        return OK

    return _with_queue(args, run)


def _call_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("service", help="the RPC service name")
    parser.add_argument("method", help="the method to call")
    parser.add_argument("args", type=_json, nargs="*", help="positional arguments, each JSON")
    parser.add_argument(
        "--kwargs", type=_json, default={}, metavar="JSON", help="keyword arguments, a JSON object"
    )
    _timeout(parser, 30.0, "seconds to wait for the result (default 30)")
    _transport_and_headers(parser)


@command("call", "call an RPC method and print its result as JSON", _call_arguments)
def _call(args: argparse.Namespace) -> int:
    if not isinstance(args.kwargs, dict):
        return _fail(USAGE, ValueError(f"--kwargs must be a JSON object, got {args.kwargs!r}"))

    def run(queue: MessageQueue) -> int:
        client = RPCClient(queue, service_name=args.service, timeout=args.timeout)
        print(_dump(client.call(args.method, *args.args, **args.kwargs)))
        return OK

    return _with_queue(args, run)
