"""eventforge: message-driven work — pub/sub, request-reply RPC and task execution.

Everything public is importable from here. Names load on first access, so ``import eventforge``
stays cheap (no pydantic, no pluggy, no plugin) until a feature is used. Observers such as
``TimingMeter`` come from the ``eventforge-observers`` distribution and resolve through the
plugin registry.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # errors
    "ConfigurationError": "errors",
    "EventforgeError": "errors",
    "FrameTooLarge": "errors",
    "MethodNotFound": "errors",
    "NoRespondersError": "errors",
    "PluginConflictError": "errors",
    "PluginImportError": "errors",
    "PluginNotFoundError": "errors",
    "ProtocolError": "errors",
    "RPCError": "errors",
    "RPCTimeout": "errors",
    "RemoteError": "errors",
    "RequestTimeout": "errors",
    "SerializationError": "errors",
    "ServiceUnavailable": "errors",
    "TransportClosedError": "errors",
    "TransportError": "errors",
    "UnsupportedCapabilityError": "errors",
    # messages and transports
    "Message": "message",
    "Capability": "transport",
    "Transport": "transport",
    "MemoryTransport": "transports.memory",
    "LocalTransport": "transports.local",
    # configuration and plugins
    "connect": "config",
    "configure": "config",
    "Settings": "config",
    "load_settings": "config",
    "registry": "_registry",
    # pub/sub and request/reply
    "MessageQueue": "queue",
    "ErrorHook": "queue",
    "RemoteQueue": "remote",
    "UnknownPeerError": "remote",
    # typed events, middleware, routing and coordination
    "event": "events",
    "event_listener": "events",
    "EventListener": "events",
    "EventValidationError": "events",
    "Middleware": "middleware",
    "UnknownMiddlewareError": "middleware",
    "ContextHeader": "middleware",
    "Dedupe": "middleware",
    "SubscriptionCache": "cache",
    "WaitMode": "cache",
    "UnroutableError": "routing",
    "Rendezvous": "rendezvous",
    "StartupPolicy": "rendezvous",
    "startup_policy": "rendezvous",
    # execution
    "Executor": "execution",
    "ExecutionMode": "execution",
    "TaskResult": "execution",
    "TaskStatus": "execution",
    "TaskNotFound": "execution",
    "UnpicklableTaskError": "execution",
    "WorkQueue": "workqueue",
    "RetryPolicy": "workqueue",
    "Delivery": "workqueue",
    "DeadLetter": "workqueue",
    "Consumer": "workqueue",
    "WorkQueueFull": "_memory_workqueue",
    # rpc
    "RPCServer": "rpc",
    "RPCClient": "rpc",
    "RoundRobinRPCClient": "rpc",
    "with_retry": "rpc",
    "RetryingRPCClient": "rpc",
    # tasks, observers, dispatchers
    "task": "tasks",
    "TaskContext": "tasks",
    "SharedState": "tasks",
    "TaskPool": "tasks",
    "TaskPoolTimeout": "tasks",
    "observe": "observing",
    "Observer": "observing",
    "Observable": "observing",
    "Eventful": "observing",
    "CallEvent": "observing",
    "Dispatcher": "dispatch",
    "BroadcastDispatcher": "dispatch",
    "RoundRobinDispatcher": "dispatch",
    "ConcurrentDispatcher": "dispatch",
    "LeastLoadedDispatcher": "dispatch",
    "Node": "dispatch",
    "DispatchError": "dispatch",
}

__all__ = sorted([*_EXPORTS, "__version__"])

if TYPE_CHECKING:
    from ._memory_workqueue import WorkQueueFull as WorkQueueFull
    from ._registry import registry as registry
    from .cache import SubscriptionCache as SubscriptionCache
    from .cache import WaitMode as WaitMode
    from .config import Settings as Settings
    from .config import configure as configure
    from .config import connect as connect
    from .config import load_settings as load_settings
    from .dispatch import BroadcastDispatcher as BroadcastDispatcher
    from .dispatch import ConcurrentDispatcher as ConcurrentDispatcher
    from .dispatch import Dispatcher as Dispatcher
    from .dispatch import DispatchError as DispatchError
    from .dispatch import LeastLoadedDispatcher as LeastLoadedDispatcher
    from .dispatch import Node as Node
    from .dispatch import RoundRobinDispatcher as RoundRobinDispatcher
    from .errors import ConfigurationError as ConfigurationError
    from .errors import EventforgeError as EventforgeError
    from .errors import FrameTooLarge as FrameTooLarge
    from .errors import MethodNotFound as MethodNotFound
    from .errors import NoRespondersError as NoRespondersError
    from .errors import PluginConflictError as PluginConflictError
    from .errors import PluginImportError as PluginImportError
    from .errors import PluginNotFoundError as PluginNotFoundError
    from .errors import ProtocolError as ProtocolError
    from .errors import RemoteError as RemoteError
    from .errors import RequestTimeout as RequestTimeout
    from .errors import RPCError as RPCError
    from .errors import RPCTimeout as RPCTimeout
    from .errors import SerializationError as SerializationError
    from .errors import ServiceUnavailable as ServiceUnavailable
    from .errors import TransportClosedError as TransportClosedError
    from .errors import TransportError as TransportError
    from .errors import UnsupportedCapabilityError as UnsupportedCapabilityError
    from .events import EventListener as EventListener
    from .events import EventValidationError as EventValidationError
    from .events import event as event
    from .events import event_listener as event_listener
    from .execution import ExecutionMode as ExecutionMode
    from .execution import Executor as Executor
    from .execution import TaskNotFound as TaskNotFound
    from .execution import TaskResult as TaskResult
    from .execution import TaskStatus as TaskStatus
    from .execution import UnpicklableTaskError as UnpicklableTaskError
    from .hookspecs import hookimpl as hookimpl
    from .message import Message as Message
    from .middleware import ContextHeader as ContextHeader
    from .middleware import Dedupe as Dedupe
    from .middleware import Middleware as Middleware
    from .middleware import UnknownMiddlewareError as UnknownMiddlewareError
    from .observing import CallEvent as CallEvent
    from .observing import Eventful as Eventful
    from .observing import Observable as Observable
    from .observing import Observer as Observer
    from .observing import observe as observe
    from .queue import ErrorHook as ErrorHook
    from .queue import MessageQueue as MessageQueue
    from .remote import RemoteQueue as RemoteQueue
    from .remote import UnknownPeerError as UnknownPeerError
    from .rendezvous import Rendezvous as Rendezvous
    from .rendezvous import StartupPolicy as StartupPolicy
    from .rendezvous import startup_policy as startup_policy
    from .routing import UnroutableError as UnroutableError
    from .rpc import RetryingRPCClient as RetryingRPCClient
    from .rpc import RoundRobinRPCClient as RoundRobinRPCClient
    from .rpc import RPCClient as RPCClient
    from .rpc import RPCServer as RPCServer
    from .rpc import with_retry as with_retry
    from .tasks import SharedState as SharedState
    from .tasks import TaskContext as TaskContext
    from .tasks import TaskPool as TaskPool
    from .tasks import TaskPoolTimeout as TaskPoolTimeout
    from .tasks import task as task
    from .transport import Capability as Capability
    from .transport import Transport as Transport
    from .transports.local import LocalTransport as LocalTransport
    from .transports.memory import MemoryTransport as MemoryTransport
    from .workqueue import Consumer as Consumer
    from .workqueue import DeadLetter as DeadLetter
    from .workqueue import Delivery as Delivery
    from .workqueue import RetryPolicy as RetryPolicy
    from .workqueue import WorkQueue as WorkQueue

    # Exported by eventforge-observers through the plugin registry (``KNOWN_EXPORTS``): typed
    # as Any here so that the documented ``from eventforge import TimingMeter`` type-checks;
    # ``from eventforge_observers import TimingMeter`` gives the precise types.
    Meter: Any
    TimingMeter: Any
    MemoryMeter: Any
    CPUMeter: Any
    MetricsMeter: Any
    LoggingReporter: Any


# Hidden from type checkers: they see the explicit names above, so a misspelt name such as
# ``from eventforge import MesageQueue`` is an error instead of an ``Any``. Names exported by
# plugins (``TimingMeter`` from eventforge-observers) resolve here at run time.
if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        module_name = _EXPORTS.get(name)
        if module_name is not None:
            value = getattr(importlib.import_module(f"{__name__}.{module_name}"), name)
            globals()[name] = value
            return value
        if name == "hookimpl":
            from .hookspecs import hookimpl

            return hookimpl
        if not name[:1].isupper():
            # Lower-case names are submodules or typos, never registry exports; resolving them here
            # would recurse into the registry while it is importing its own submodules.
            raise AttributeError(f"module 'eventforge' has no attribute {name!r}")
        from ._registry import find_export

        return find_export(name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
