"""Settings, configuration files, logging setup, connect() and startup policies (layer 5)."""

from __future__ import annotations

from eventforge.config._logging import FORMATS as FORMATS
from eventforge.config._logging import LEVELS as LEVELS
from eventforge.config._logging import level_name as level_name
from eventforge.config._logging import setup_logging as setup_logging
from eventforge.config._settings import (
    LoggingSettings as LoggingSettings,
)
from eventforge.config._settings import (
    Settings as Settings,
)
from eventforge.config._settings import (
    configure as configure,
)
from eventforge.config._settings import (
    configured_transport as configured_transport,
)
from eventforge.config._settings import (
    connect as connect,
)
from eventforge.config._settings import (
    current_settings as current_settings,
)
from eventforge.config._settings import (
    default_transport as default_transport,
)
from eventforge.config._settings import (
    load_settings as load_settings,
)
from eventforge.config._settings import (
    mask_secrets as mask_secrets,
)
from eventforge.config._startup import (
    Barrier as Barrier,
)
from eventforge.config._startup import (
    FixedDelay as FixedDelay,
)
from eventforge.config._startup import (
    NoWait as NoWait,
)
from eventforge.config._startup import (
    PolicyChain as PolicyChain,
)
from eventforge.config._startup import (
    ReadyQueue as ReadyQueue,
)
from eventforge.config._startup import (
    StartupPolicy as StartupPolicy,
)
from eventforge.config._startup import (
    startup_policy as startup_policy,
)

__all__ = [
    "FORMATS",
    "LEVELS",
    "Barrier",
    "FixedDelay",
    "LoggingSettings",
    "NoWait",
    "PolicyChain",
    "ReadyQueue",
    "Settings",
    "StartupPolicy",
    "configure",
    "configured_transport",
    "connect",
    "current_settings",
    "default_transport",
    "level_name",
    "load_settings",
    "mask_secrets",
    "setup_logging",
    "startup_policy",
]
