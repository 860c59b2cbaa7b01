"""Run an application's handlers as one service, with health per subscription and AsyncAPI.

:class:`Service` owns subscribers, RPC methods, work-queue consumers and tasks; ``eventforge
run module:svc`` runs it (with worker processes and health endpoints). See ``docs/service.md``.
"""

from __future__ import annotations

from eventforge.service.app import Endpoint, Service
from eventforge.service.asyncapi import asyncapi_document, dump_document
from eventforge.service.health import HealthState, Tracker
from eventforge.service.http import HealthServer

__all__ = [
    "Endpoint",
    "HealthServer",
    "HealthState",
    "Service",
    "Tracker",
    "asyncapi_document",
    "dump_document",
]
