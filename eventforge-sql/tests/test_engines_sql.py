"""Engines built from URLs: a URL naming no driver gets the driver of eventforge-sql's extras
(SQLAlchemy 2.0's defaults, psycopg2 and mysqlclient, are not installed with them)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from eventforge import connect
from eventforge_sql import engine_from_url
from eventforge_sql.transport import SqlTransport


def test_a_url_naming_no_driver_gets_the_driver_of_the_extras() -> None:
    """Runs at SQLAlchemy's floor too (scripts/floors.py), where postgresql:// means psycopg2."""
    for url, driver in [
        ("postgresql://app@127.0.0.1/db", "psycopg"),
        ("mysql://app@127.0.0.1/db", "pymysql"),
        ("mariadb://app@127.0.0.1/db", "pymysql"),
        ("postgresql+psycopg://app@127.0.0.1/db", "psycopg"),
    ]:
        engine = engine_from_url(url)  # builds the engine; connects on first use only
        assert (engine.url.drivername, engine.dialect.driver) == (
            f"{url.split('+')[0].split(':')[0]}+{driver}",
            driver,
        )
        engine.dispose()


@pytest.mark.parametrize(("database", "scheme"), [("pg", "postgresql"), ("mariadb", "mysql")])
def test_a_plain_url_reaches_the_private_server(
    database: str, scheme: str, request: pytest.FixtureRequest
) -> None:
    server = request.getfixturevalue(f"{database}_server")
    engine = engine_from_url(f"{scheme}://{server.url.split('://', 1)[1]}")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    engine.dispose()


def test_connect_takes_a_plain_postgresql_url(pg_engine: sa.Engine) -> None:
    plain = pg_engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    transport = connect(plain)
    assert isinstance(transport, SqlTransport)
    assert transport.engine.dialect.driver == "psycopg"
    transport.close()
