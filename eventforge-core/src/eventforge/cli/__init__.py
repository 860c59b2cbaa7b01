"""The ``eventforge`` command.

``plugins`` lists what is installed (and the first-party plugins that are not), fitted to the
terminal; ``publish``, ``subscribe``, ``request`` and ``call`` talk to a transport from a shell;
``worker`` serves a module's handlers; ``demo`` runs the walk-through. The exit statuses are in
:data:`EXIT_CODES`. Each command's module is imported only when it runs; listing plugins
never imports a plugin's target.
"""

from __future__ import annotations

from eventforge.cli._base import (
    COMMAND_MODULES,
    COMMANDS,
    EXIT_CODES,
    Command,
    build_parser,
    command,
    load_commands,
    main,
)
from eventforge.cli._plugins import COLUMNS, plugin_rows

__all__ = [
    "COLUMNS",
    "COMMANDS",
    "COMMAND_MODULES",
    "EXIT_CODES",
    "Command",
    "build_parser",
    "command",
    "load_commands",
    "main",
    "plugin_rows",
]
