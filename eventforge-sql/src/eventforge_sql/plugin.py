"""Hook implementations of eventforge-sql: registers the ``sql`` transport.

Imports only eventforge and the standard library: listing plugins never imports SQLAlchemy.
"""

from __future__ import annotations

from eventforge.hookspecs import hookimpl
from eventforge.plugins import TransportSpec
from eventforge.transport import Capability

__all__ = ["eventforge_transports"]

SCHEMES = (
    "postgresql",
    "postgresql+psycopg",
    "sqlite",
    "mysql",
    "mysql+pymysql",
    "mariadb",
    "mariadb+pymysql",
)


@hookimpl
def eventforge_transports() -> list[TransportSpec]:
    """Register the ``sql`` transport under SQLAlchemy's URL schemes."""
    return [
        TransportSpec(
            name="sql",
            target="eventforge_sql.transport:SqlTransport",
            summary=(
                "Durable work queues and task results on database tables (PostgreSQL, SQLite, "
                "MariaDB) and claims for periodic schedules; at-most-once pub/sub over "
                "LISTEN/NOTIFY on PostgreSQL."
            ),
            schemes=SCHEMES,
            capabilities=frozenset({Capability.DURABLE, Capability.RESULTS, Capability.CLAIMS}),
            requires=("sqlalchemy",),
            exports=("SqlTransport",),
        )
    ]
