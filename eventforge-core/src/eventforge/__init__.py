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
    "ResultNotFound": "errors",
    "ResultTimeout": "errors",
    "TaskFailedError": "errors",
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
    "registry": "plugins._registry",
    # pub/sub and request/reply
    "MessageQueue": "queue",
    "ErrorHook": "queue",
    "RemoteQueue": "queue.remote",
    "UnknownPeerError": "queue.remote",
    # typed events, middleware, routing and coordination
    "event": "events",
    "event_listener": "events",
    "EventListener": "events",
    "EventValidationError": "events",
    "Middleware": "middleware",
    "UnknownMiddlewareError": "middleware",
    "ContextHeader": "middleware",
    "Dedupe": "middleware",
    "SubscriptionCache": "queue.cache",
    "WaitMode": "queue.cache",
    "UnroutableError": "errors",
    "Rendezvous": "queue.rendezvous",
    "StartupPolicy": "config",
    "startup_policy": "config",
    # execution
    "Executor": "execution",
    "ExecutionMode": "execution",
    "TaskResult": "execution",
    "TaskStatus": "execution",
    "TaskNotFound": "execution",
    "ResultHandle": "execution",
    "ResultStatus": "execution",
    "UnpicklableTaskError": "execution",
    "WorkQueue": "workqueue",
    "RetryPolicy": "workqueue",
    "Delivery": "workqueue",
    "DeadLetter": "workqueue",
    "Consumer": "workqueue",
    "WorkQueueFull": "transports._memory_workqueue",
    # rpc
    "RPCServer": "rpc",
    "RPCClient": "rpc",
    "RoundRobinRPCClient": "rpc",
    "with_retry": "rpc",
    "RetryingRPCClient": "rpc",
    # tasks, observers, dispatchers
    "task": "tasks",
    "send_task": "tasks",
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
    "Node": "rpc",
    "DispatchError": "dispatch",
}

__all__ = sorted([*_EXPORTS, "__version__"])

if TYPE_CHECKING:
    from eventforge.config import Settings as Settings
    from eventforge.config import StartupPolicy as StartupPolicy
    from eventforge.config import configure as configure
    from eventforge.config import connect as connect
    from eventforge.config import load_settings as load_settings
    from eventforge.config import startup_policy as startup_policy
    from eventforge.dispatch import BroadcastDispatcher as BroadcastDispatcher
    from eventforge.dispatch import ConcurrentDispatcher as ConcurrentDispatcher
    from eventforge.dispatch import Dispatcher as Dispatcher
    from eventforge.dispatch import DispatchError as DispatchError
    from eventforge.dispatch import LeastLoadedDispatcher as LeastLoadedDispatcher
    from eventforge.dispatch import RoundRobinDispatcher as RoundRobinDispatcher
    from eventforge.dispatch.middleware import ContextHeader as ContextHeader
    from eventforge.dispatch.middleware import Dedupe as Dedupe
    from eventforge.dispatch.middleware import Middleware as Middleware
    from eventforge.dispatch.middleware import UnknownMiddlewareError as UnknownMiddlewareError
    from eventforge.dispatch.observing import CallEvent as CallEvent
    from eventforge.dispatch.observing import Eventful as Eventful
    from eventforge.dispatch.observing import Observable as Observable
    from eventforge.dispatch.observing import Observer as Observer
    from eventforge.dispatch.observing import observe as observe
    from eventforge.errors import ConfigurationError as ConfigurationError
    from eventforge.errors import EventforgeError as EventforgeError
    from eventforge.errors import FrameTooLarge as FrameTooLarge
    from eventforge.errors import MethodNotFound as MethodNotFound
    from eventforge.errors import NoRespondersError as NoRespondersError
    from eventforge.errors import PluginConflictError as PluginConflictError
    from eventforge.errors import PluginImportError as PluginImportError
    from eventforge.errors import PluginNotFoundError as PluginNotFoundError
    from eventforge.errors import ProtocolError as ProtocolError
    from eventforge.errors import RemoteError as RemoteError
    from eventforge.errors import RequestTimeout as RequestTimeout
    from eventforge.errors import ResultNotFound as ResultNotFound
    from eventforge.errors import ResultTimeout as ResultTimeout
    from eventforge.errors import RPCError as RPCError
    from eventforge.errors import RPCTimeout as RPCTimeout
    from eventforge.errors import SerializationError as SerializationError
    from eventforge.errors import ServiceUnavailable as ServiceUnavailable
    from eventforge.errors import TaskFailedError as TaskFailedError
    from eventforge.errors import TransportClosedError as TransportClosedError
    from eventforge.errors import TransportError as TransportError
    from eventforge.errors import UnroutableError as UnroutableError
    from eventforge.errors import UnsupportedCapabilityError as UnsupportedCapabilityError
    from eventforge.events import EventListener as EventListener
    from eventforge.events import EventValidationError as EventValidationError
    from eventforge.events import event as event
    from eventforge.events import event_listener as event_listener
    from eventforge.execution import ExecutionMode as ExecutionMode
    from eventforge.execution import Executor as Executor
    from eventforge.execution import ResultHandle as ResultHandle
    from eventforge.execution import ResultStatus as ResultStatus
    from eventforge.execution import TaskNotFound as TaskNotFound
    from eventforge.execution import TaskResult as TaskResult
    from eventforge.execution import TaskStatus as TaskStatus
    from eventforge.execution import UnpicklableTaskError as UnpicklableTaskError
    from eventforge.message import Message as Message
    from eventforge.plugins import registry as registry
    from eventforge.plugins.hookspecs import hookimpl as hookimpl
    from eventforge.queue import ErrorHook as ErrorHook
    from eventforge.queue import MessageQueue as MessageQueue
    from eventforge.queue.cache import SubscriptionCache as SubscriptionCache
    from eventforge.queue.cache import WaitMode as WaitMode
    from eventforge.queue.remote import RemoteQueue as RemoteQueue
    from eventforge.queue.remote import UnknownPeerError as UnknownPeerError
    from eventforge.queue.rendezvous import Rendezvous as Rendezvous
    from eventforge.rpc import Node as Node
    from eventforge.rpc import RetryingRPCClient as RetryingRPCClient
    from eventforge.rpc import RoundRobinRPCClient as RoundRobinRPCClient
    from eventforge.rpc import RPCClient as RPCClient
    from eventforge.rpc import RPCServer as RPCServer
    from eventforge.rpc import with_retry as with_retry
    from eventforge.tasks import SharedState as SharedState
    from eventforge.tasks import TaskContext as TaskContext
    from eventforge.tasks import TaskPool as TaskPool
    from eventforge.tasks import TaskPoolTimeout as TaskPoolTimeout
    from eventforge.tasks import send_task as send_task
    from eventforge.tasks import task as task
    from eventforge.transport import Capability as Capability
    from eventforge.transport import DeadLetter as DeadLetter
    from eventforge.transport import Delivery as Delivery
    from eventforge.transport import RetryPolicy as RetryPolicy
    from eventforge.transport import Transport as Transport
    from eventforge.transports import WorkQueueFull as WorkQueueFull
    from eventforge.transports.local import LocalTransport as LocalTransport
    from eventforge.transports.memory import MemoryTransport as MemoryTransport
    from eventforge.workqueue import Consumer as Consumer
    from eventforge.workqueue import WorkQueue as WorkQueue

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
            from eventforge.plugins.hookspecs import hookimpl

            return hookimpl
        if not name[:1].isupper():
            # Lower-case names are submodules or typos, never registry exports; resolving them here
            # would recurse into the registry while it is importing its own submodules.
            raise AttributeError(f"module 'eventforge' has no attribute {name!r}")
        from eventforge.plugins import find_export

        return find_export(name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
