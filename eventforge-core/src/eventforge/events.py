"""Typed events: a pydantic model or dataclass that is published and received as itself.

``@event()`` marks a class as an event. Its *name* (the class name unless given) is also the
topic it is published on, so it must be a valid topic: dots separate segments, no whitespace or
wildcards (``"OrderCreated"``, ``"orders.created"``). ``queue.publish(OrderCreated(...))``
sends the event as a JSON-safe dict with the event name in the ``ef-event`` header; a handler
annotated with the event class (``def on_order(evt: OrderCreated)``) or an
``@event_listener(OrderCreated)`` class receives it validated, as an ``OrderCreated``.

Validation happens once per message, at the receiving queue, with a pydantic ``TypeAdapter``
built once per class. A message that fails validation never reaches the handler: the queue
counts it (``stats["rejected"]``) and passes an :class:`EventValidationError` to the error hook.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast

from eventforge.errors import EventforgeError
from eventforge.message import Message
from eventforge.topics import validate_topic

__all__ = [
    "EVENT_HEADER",
    "EventInfo",
    "EventListener",
    "EventValidationError",
    "ListenerInfo",
    "adapter_for",
    "decode_event",
    "encode_event",
    "event",
    "event_info",
    "event_listener",
    "event_message",
    "event_type_of",
    "is_event",
    "listener_info",
    "typed_handler",
    "typed_subscription",
]

EVENT_HEADER = "ef-event"
"""The header carrying the event name, so a receiver can check what it is validating."""

E = TypeVar("E")
C = TypeVar("C", bound=type)


class EventValidationError(EventforgeError, ValueError):
    """A message claimed to be (or was subscribed as) an event but did not validate.

    Raised on the receiving side; the handler never runs. ``event`` is the expected event name,
    ``message`` the :class:`Message` that was rejected.
    """

    def __init__(self, text: str, *, event: str, message: Message) -> None:
        super().__init__(text)
        self.event = event
        self.message = message


@dataclasses.dataclass(frozen=True)
class EventInfo:
    """What ``@event`` records on a class: its ``name`` (= topic) and ``durable`` flag."""

    name: str
    durable: bool
    cls: type


@dataclasses.dataclass(frozen=True)
class ListenerInfo:
    """What ``@event_listener`` records: the event class, listener ``name`` and ``per_process``."""

    event: type
    name: str
    per_process: bool

    @property
    def group(self) -> str | None:
        """The competing-consumer group of this listener, ``None`` when every process gets all."""
        if self.per_process:
            return None
        return f"{event_info(self.event).name}::{self.name}"


_INFO = "__eventforge_event__"
_LISTENER = "__eventforge_listener__"


def _is_model_class(cls: object) -> bool:
    if not isinstance(cls, type):
        return False
    if dataclasses.is_dataclass(cls):
        return True
    try:
        from pydantic import BaseModel
    except ImportError:  # pragma: no cover - pydantic is a core dependency
        return False
    return issubclass(cls, BaseModel)


def event(name: str | None = None, *, durable: bool = False) -> Callable[[C], C]:
    """Class decorator: make a pydantic model or a dataclass an event.

    ``name`` defaults to the class name; it is the topic the event is published on. ``durable``
    is recorded on the event (``event_info(cls).durable``) for durable consumers to honour.
    Apply it after ``@dataclass`` (i.e. written above it) or on a ``BaseModel`` subclass.
    """
    if isinstance(cast(object, name), type):
        raise TypeError("use @event() or @event('name') (with parentheses)")

    def decorate(cls: C) -> C:
        if not _is_model_class(cls):
            raise TypeError(
                f"@event needs a pydantic model or a dataclass, got {cls!r}; put @event() above "
                "@dataclass, or subclass pydantic.BaseModel"
            )
        event_name = cls.__name__ if name is None else name
        try:
            validate_topic(event_name)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"event name {event_name!r} of {cls.__qualname__} is also its topic and is not "
                f"a valid one: {exc}"
            ) from None
        setattr(cls, _INFO, EventInfo(event_name, bool(durable), cls))
        return cls

    return decorate


def is_event(obj: object) -> bool:
    """Tell whether ``obj`` is an ``@event`` class or an instance of one."""
    cls = obj if isinstance(obj, type) else type(obj)
    info = cls.__dict__.get(_INFO)
    return isinstance(info, EventInfo)


def event_info(cls: type) -> EventInfo:
    """The :class:`EventInfo` of an ``@event`` class; ``TypeError`` for any other class."""
    info = cls.__dict__.get(_INFO) if isinstance(cls, type) else None
    if not isinstance(info, EventInfo):
        raise TypeError(f"{cls!r} is not an event class; decorate it with @event()")
    return info


_adapters: dict[Any, Any] = {}


def adapter_for(cls: Any) -> Any:
    """The pydantic ``TypeAdapter`` of ``cls``, built once per class and cached."""
    adapter = _adapters.get(cls)
    if adapter is None:
        from pydantic import TypeAdapter

        adapter = _adapters[cls] = TypeAdapter(cls)
    return adapter


def encode_event(obj: object) -> tuple[str, dict[str, Any], str]:
    """Return ``(topic, JSON-safe payload, event name)`` for an event instance."""
    info = event_info(type(obj))
    payload = adapter_for(info.cls).dump_python(obj, mode="json")
    return info.name, payload, info.name


def event_message(event: object, payload: Any, headers: dict[str, Any]) -> tuple[str, Any]:
    """For ``publish(event)``: return ``(topic, payload)`` and add the event header to ``headers``."""
    if not is_event(event) or isinstance(event, type):
        raise TypeError(
            f"publish() takes a topic (str) or an @event instance, got {type(event).__name__}"
        )
    if payload is not None:
        raise TypeError("publish(event) takes no payload: the event is the payload")
    topic, body, name = encode_event(event)
    headers[EVENT_HEADER] = name
    return topic, body


def typed_subscription(
    topic: str | type, handler: Callable[..., Any]
) -> tuple[str, Callable[..., Any]]:
    """For ``subscribe``: resolve an event-class topic and wrap a typed handler, once.

    The handler gets decoded events when ``topic`` is an event class or its first parameter is
    annotated with one; otherwise it is returned unchanged.
    """
    expected: type | None = None
    if isinstance(topic, type):
        expected = event_info(topic).cls
        topic = event_info(topic).name
    if getattr(handler, "_eventforge_typed", False):
        return topic, handler
    annotated = event_type_of(handler)
    if expected is not None and annotated is not None and annotated is not expected:
        raise TypeError(
            f"handler {getattr(handler, '__qualname__', handler)!r} takes "
            f"{annotated.__name__} but is subscribed to {expected.__name__}"
        )
    event_cls = annotated or expected
    if event_cls is None:
        return topic, handler
    return topic, typed_handler(event_cls, handler)


def decode_event(cls: type[E], message: Message) -> E:
    """Validate ``message``'s payload as ``cls``; raise :class:`EventValidationError` if not."""
    info = event_info(cls)
    payload = message.payload
    if type(payload) is cls:
        return payload  # in-process: already the event
    claimed = message.headers.get(EVENT_HEADER)
    if claimed is not None and claimed != info.name:
        raise EventValidationError(
            f"message {message.id} on {message.topic!r} carries event {claimed!r}, but the "
            f"handler expects {info.name!r}",
            event=info.name,
            message=message,
        )
    try:
        value: E = adapter_for(cls).validate_python(payload)
    except Exception as exc:  # pydantic.ValidationError and friends
        raise EventValidationError(
            f"message {message.id} on {message.topic!r} is not a valid {info.name}: {exc}",
            event=info.name,
            message=message,
        ) from exc
    return value


def event_type_of(handler: Callable[..., Any]) -> type | None:
    """The ``@event`` class the handler's first parameter is annotated with, if any.

    Read once at subscribe time with :func:`typing.get_type_hints`, so string annotations
    (``from __future__ import annotations``) work too.
    """
    target = handler
    if not (inspect.isfunction(target) or inspect.ismethod(target)):
        target = getattr(handler, "__call__", handler)  # noqa: B004 - callable instances
    try:
        params = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):
        return None
    if not params:
        return None
    try:
        hints = typing.get_type_hints(target)
    except Exception:
        return None
    hint = hints.get(params[0].name)
    return hint if isinstance(hint, type) and is_event(hint) else None


def typed_handler(cls: type, handler: Callable[..., Any]) -> Callable[[Message], Any]:
    """Wrap ``handler`` so it receives ``cls`` instances decoded from each message.

    The wrapper is a coroutine function when the handler is one, so the queue runs it on an
    event loop either way.
    """
    if inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004
    ):

        async def deliver_async(message: Message) -> Any:
            return await handler(decode_event(cls, message))

        deliver_async.__wrapped__ = handler  # type: ignore[attr-defined]
        deliver_async._eventforge_typed = True  # type: ignore[attr-defined]
        return deliver_async

    def deliver(message: Message) -> Any:
        return handler(decode_event(cls, message))

    deliver.__wrapped__ = handler  # type: ignore[attr-defined]
    deliver._eventforge_typed = True  # type: ignore[attr-defined]
    return deliver


class EventListener(ABC, Generic[E]):
    """Optional base class of listener classes: implement ``on(self, event)`` (sync or async)."""

    @abstractmethod
    def on(self, event: E) -> Any:
        """Handle one event."""


def event_listener(
    event_cls: type, name: str | None = None, *, per_process: bool = False
) -> Callable[[C], C]:
    """Class decorator: a listener of ``event_cls`` events, registered with ``queue.listen()``.

    Listeners with one ``name`` (default: the class name) share the work: each event goes to
    one of them, across processes on transports with groups. ``per_process=True`` makes every
    registered listener instance (in every process) receive every event.
    """
    info = event_info(event_cls)

    def decorate(cls: C) -> C:
        if not callable(getattr(cls, "on", None)):
            raise TypeError(f"@event_listener class {cls.__qualname__} needs an on(self, event)")
        listener_name = cls.__name__ if name is None else name
        if not isinstance(listener_name, str) or not listener_name:
            raise ValueError(f"listener name must be a non-empty str, got {listener_name!r}")
        setattr(cls, _LISTENER, ListenerInfo(info.cls, listener_name, bool(per_process)))
        return cls

    return decorate


def listener_info(listener: object) -> ListenerInfo:
    """The :class:`ListenerInfo` of an ``@event_listener`` instance (or class)."""
    cls = listener if isinstance(listener, type) else type(listener)
    info = getattr(cls, _LISTENER, None)
    if not isinstance(info, ListenerInfo):
        raise TypeError(
            f"{cls.__qualname__} is not an event listener; decorate it with "
            "@event_listener(EventClass)"
        )
    return info
