"""The claim as one statement on PostgreSQL: settle the buffered acks and lease the next rows.

``WITH acked AS (DELETE ...) UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED LIMIT n)
RETURNING ...`` is atomic by itself, so it runs in autocommit: one round trip per batch where a
transaction of a ``DELETE`` and an ``UPDATE`` takes four (``BEGIN``, two statements,
``COMMIT``). A data-modifying ``WITH`` runs to completion whether or not the main statement
reads it. The rows being acked are kept out of the claim (``id <> ALL(:ack_ids)``), so no row is
both deleted and leased by the statement. The statement text is built once per table and
shape; SQLAlchemy then only binds the parameters.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Table, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect

from .schema import CLAIMABLE

__all__ = ["claim_statement"]


def claim_statement(table: Table, dialect: Dialect, *, acks: bool, max_attempts: bool) -> Any:
    """The ``text()`` claim for ``table``: parameters ``queue``, ``now``, ``owner``, ``expiry``,
    ``limit``, with ``max_attempts`` the ``max_attempts`` bound, with ``acks`` ``ack_ids`` and
    ``ack_owner`` (acked rows of one lease owner, deleted first: one owner, not an array of
    owners per id, which psycopg takes four times longer to send)."""
    quote = dialect.identifier_preparer
    t = quote.format_table(table)
    statuses = ", ".join(f"'{status}'" for status in CLAIMABLE)  # literals: the partial index
    head = ""
    extra = ""
    if acks:
        head = (
            f"WITH acked AS (DELETE FROM {t} AS d WHERE d.id = ANY(CAST(:ack_ids AS BIGINT[])) "
            "AND d.lease_owner = :ack_owner AND d.status = 'processing') "
        )
        extra += " AND p.id <> ALL(CAST(:ack_ids AS BIGINT[]))"
    if max_attempts:
        extra += " AND NOT (p.status = 'processing' AND p.attempt >= :max_attempts)"
    sql = (
        f"{head}UPDATE {t} SET status = 'processing', attempt = {t}.attempt + 1, "
        f"lease_owner = :owner, available_at = :expiry "
        f"WHERE {t}.id IN (SELECT p.id FROM {t} AS p "
        f"WHERE p.queue = :queue AND p.status IN ({statuses}) AND p.available_at <= :now{extra} "
        "ORDER BY p.id LIMIT :limit FOR UPDATE SKIP LOCKED) "
        f"RETURNING {t}.id, {t}.message_id, {t}.envelope, {t}.attempt, {t}.event_type"
    )
    stmt = text(sql)
    if acks:
        stmt = stmt.bindparams(bindparam("ack_ids", type_=ARRAY(BigInteger())))
    return stmt
