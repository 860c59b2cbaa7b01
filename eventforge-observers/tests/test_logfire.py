"""Logfire is an optional extra: without it, the error names the extra to install."""

from __future__ import annotations

import importlib
import importlib.util

import pytest
from eventforge import registry


@pytest.mark.skipif(importlib.util.find_spec("logfire") is not None, reason="logfire is installed")
def test_missing_logfire_names_the_extra() -> None:
    with pytest.raises(ImportError, match=r"pip install 'eventforge-observers\[logfire\]'"):
        importlib.import_module("eventforge_observers.logfire")


@pytest.mark.skipif(importlib.util.find_spec("logfire") is not None, reason="logfire is installed")
def test_registry_reports_the_missing_requirement_without_importing() -> None:
    reg = registry()
    entry = reg.get("observer", "logfire")
    assert entry.plugin.distribution == "eventforge-observers"
    assert reg.missing_requirements(entry) == ["logfire"]
