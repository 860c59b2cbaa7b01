"""Run an application's handlers as one service, with health per subscription and AsyncAPI.

:class:`Service` owns subscribers, RPC methods, work-queue consumers and tasks; ``eventforge
run module:svc`` runs it (with worker processes and health endpoints). See ``docs/service.md``.
"""

from __future__ import annotations

from .app import Endpoint, Service
from .asyncapi import asyncapi_document, dump_document
from .health import HealthState, Tracker
from .http import HealthServer

__all__ = [
    "Endpoint",
    "HealthServer",
    "HealthState",
    "Service",
    "Tracker",
    "asyncapi_document",
    "dump_document",
]
