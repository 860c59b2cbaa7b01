"""Exception types raised by eventforge.

Every error says what happened and what to do about it. Errors carry their facts as
attributes so that callers can act on them without parsing the message.
"""

from __future__ import annotations

from collections.abc import Sequence

from eventforge.message import Message

__all__ = [
    "ConfigurationError",
    "EventforgeError",
    "FrameTooLarge",
    "MethodNotFound",
    "NoRespondersError",
    "PluginConflictError",
    "PluginImportError",
    "PluginNotFoundError",
    "ProtocolError",
    "RPCError",
    "RPCTimeout",
    "RemoteError",
    "RequestTimeout",
    "ResultNotFound",
    "ResultTimeout",
    "SerializationError",
    "ServiceUnavailable",
    "TaskFailedError",
    "TransportClosedError",
    "TransportError",
    "UnroutableError",
    "UnsupportedCapabilityError",
]


class EventforgeError(Exception):
    """Base class of every error eventforge raises on purpose."""


class ConfigurationError(EventforgeError, ValueError):
    """A setting is missing, malformed, or names something that cannot be used."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class PluginNotFoundError(EventforgeError, LookupError):
    """No installed plugin of ``kind`` is called ``name``."""

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        name: str,
        installed: Sequence[str] = (),
        suggestions: Sequence[str] = (),
        install_hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.name = name
        self.installed = tuple(installed)
        self.suggestions = tuple(suggestions)
        self.install_hint = install_hint


class PluginConflictError(EventforgeError, LookupError):
    """Two plugins claim the same name (or alias, or URL scheme) for one kind."""

    def __init__(self, message: str, *, kind: str, name: str, providers: Sequence[str]) -> None:
        super().__init__(message)
        self.kind = kind
        self.name = name
        self.providers = tuple(providers)


class PluginImportError(EventforgeError, ImportError):
    """A plugin was selected but its module could not be imported or loaded."""

    def __init__(self, message: str, *, plugin: str, distribution: str | None = None) -> None:
        super().__init__(message)
        self.plugin = plugin
        self.distribution = distribution


class UnsupportedCapabilityError(ConfigurationError):
    """The chosen transport cannot give a guarantee or feature that was asked of it."""

    def __init__(self, message: str, *, transport: str, capability: str) -> None:
        super().__init__(message)
        self.transport = transport
        self.capability = capability


class SerializationError(EventforgeError, ValueError):
    """A payload could not be encoded, or bytes could not be decoded into one."""


class ProtocolError(EventforgeError, ValueError):
    """Bytes received from a peer are not a valid eventforge envelope or frame."""


class FrameTooLarge(ProtocolError):
    """A frame or envelope is larger than the configured maximum."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"frame of {size} bytes exceeds max_frame_size={limit}; raise max_frame_size on both "
            "ends or send smaller payloads"
        )
        self.size = size
        self.limit = limit


class TransportError(EventforgeError):
    """The transport could not carry out an operation (connection lost, broker refused...)."""


class TransportClosedError(TransportError):
    """An operation was attempted on a transport (or queue) that has been closed."""


class UnroutableError(TransportError):
    """A message was published that no subscriber received (policy ``"return"``)."""

    def __init__(self, message: Message) -> None:
        super().__init__(
            f"nobody is subscribed to {message.topic!r}: message {message.id} reached no "
            "subscriber (the queue's unroutable policy is 'return'); subscribe first, or choose "
            "'drop' or 'reroute:<topic>'"
        )
        self.message = message


class NoRespondersError(TransportError):
    """A request found nobody subscribed to answer it (reported at once, not after a timeout)."""

    def __init__(self, topic: str) -> None:
        super().__init__(
            f"no responders for {topic!r}: nothing is subscribed to answer it; start a server "
            "(RPCServer.serve / python -m eventforge.worker) or check the service name"
        )
        self.topic = topic


class RPCError(EventforgeError):
    """Base class of the errors an RPC call raises."""


class ServiceUnavailable(TransportError, RPCError):
    """The server received the call but did not run it (it is stopping, or its backlog is full).

    The method did not run, so the call is safe to retry, on this server later or on another
    one; :func:`~eventforge.rpc.with_retry` retries it by default (it is a ``TransportError``).
    """

    def __init__(self, message: str, *, service: str | None = None, method: str | None = None):
        super().__init__(message)
        self.service = service
        self.method = method


class RPCTimeout(RPCError, TimeoutError):
    """No reply arrived before the deadline."""

    def __init__(self, message: str, *, method: str | None = None, timeout: float | None = None):
        super().__init__(message)
        self.method = method
        self.timeout = timeout


class RequestTimeout(EventforgeError, TimeoutError):
    """:meth:`MessageQueue.ask <eventforge.queue.MessageQueue.ask>` got no reply in time."""

    def __init__(self, message: str, *, topic: str, timeout: float | None) -> None:
        super().__init__(message)
        self.topic = topic
        self.timeout = timeout


class MethodNotFound(RPCError, LookupError):
    """The server has no method by that name."""

    def __init__(self, method: str, available: Sequence[str], service: str | None = None) -> None:
        names = ", ".join(sorted(available)) or "(none)"
        where = f" on service {service!r}" if service else ""
        super().__init__(f"no RPC method {method!r}{where}; registered methods: {names}")
        self.method = method
        self.available = tuple(sorted(available))
        self.service = service


class RemoteError(RPCError):
    """The remote method raised; carries the remote exception's type, message and traceback."""

    def __init__(self, type_name: str, message: str, traceback_text: str = "") -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.remote_message = message
        self.traceback_text = traceback_text


class TaskFailedError(EventforgeError):
    """A task whose result was stored raised; read from its result store by any process.

    Carries what the worker recorded: the exception's type name and message, where it was
    raised, and a summary of its traceback (its last frames).
    """

    def __init__(
        self,
        *,
        task: str,
        task_id: str,
        type_name: str,
        message: str,
        traceback_text: str = "",
        where: str = "",
        worker: str = "",
    ) -> None:
        at = f" at {where}" if where else ""
        on = f" on worker {worker}" if worker else ""
        super().__init__(
            f"task {task!r} (id {task_id}) failed{on}: {type_name}: {message}{at}; the worker's "
            "traceback is in .traceback_text. Fix the cause and send the task again"
        )
        self.task = task
        self.task_id = task_id
        self.type_name = type_name
        self.remote_message = message
        self.traceback_text = traceback_text
        self.where = where
        self.worker = worker


class ResultTimeout(EventforgeError, TimeoutError):
    """A stored result was waited for and the task had not finished in time."""

    def __init__(self, message: str, *, task_id: str, status: str, timeout: float | None) -> None:
        super().__init__(message)
        self.task_id = task_id
        self.status = status
        self.timeout = timeout


class ResultNotFound(EventforgeError, LookupError):
    """No record of a task id in the result store: never stored there, expired, or forgotten."""

    def __init__(self, task_id: str, store: str = "") -> None:
        where = f" in the {store} result store" if store else ""
        super().__init__(
            f"no result of task id {task_id!r}{where}: it was not sent with a result store "
            "(t.send() with @task(results=...)), or its record expired (a record is kept "
            "result_ttl seconds after its last write), or it was forgotten. Check the id and "
            "the store, or raise result_ttl"
        )
        self.task_id = task_id
