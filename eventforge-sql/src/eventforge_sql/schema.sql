-- eventforge-sql schema, version 1 (PostgreSQL, default table names).
-- Equivalent to eventforge_sql.create_schema(engine); apply it with psql when the application's
-- migrations own the database. The three queue-shaped tables share one layout (see
-- docs/inbox-outbox.md): times are UNIX seconds; status is one of pending, processing, failed,
-- processed, dead_letter; while a row is processing, available_at is its lease's expiry.
-- eventforge_claims holds the claims of periodic schedules (docs/scheduling.md).

CREATE TABLE IF NOT EXISTS eventforge_queue (
    id BIGSERIAL NOT NULL,
    queue VARCHAR(255) NOT NULL,
    message_id VARCHAR(255) NOT NULL,
    envelope TEXT NOT NULL,
    status VARCHAR(16) NOT NULL,
    attempt INTEGER NOT NULL,
    available_at DOUBLE PRECISION NOT NULL,
    lease_owner VARCHAR(64),
    created_at DOUBLE PRECISION NOT NULL,
    processed_at DOUBLE PRECISION,
    error TEXT,
    last_error_at DOUBLE PRECISION,
    event_type VARCHAR(128),
    PRIMARY KEY (id),
    CONSTRAINT uq_eventforge_queue_message UNIQUE (queue, message_id)
);
CREATE INDEX IF NOT EXISTS ix_eventforge_queue_claim ON eventforge_queue (queue, id) WHERE status IN ('pending', 'processing', 'failed');
CREATE INDEX IF NOT EXISTS ix_eventforge_queue_status ON eventforge_queue (queue, status, available_at);

CREATE TABLE IF NOT EXISTS eventforge_inbox (
    id BIGSERIAL NOT NULL,
    queue VARCHAR(255) NOT NULL,
    message_id VARCHAR(255) NOT NULL,
    envelope TEXT NOT NULL,
    status VARCHAR(16) NOT NULL,
    attempt INTEGER NOT NULL,
    available_at DOUBLE PRECISION NOT NULL,
    lease_owner VARCHAR(64),
    created_at DOUBLE PRECISION NOT NULL,
    processed_at DOUBLE PRECISION,
    error TEXT,
    last_error_at DOUBLE PRECISION,
    event_type VARCHAR(128),
    PRIMARY KEY (id),
    CONSTRAINT uq_eventforge_inbox_message UNIQUE (queue, message_id)
);
CREATE INDEX IF NOT EXISTS ix_eventforge_inbox_claim ON eventforge_inbox (queue, id) WHERE status IN ('pending', 'processing', 'failed');
CREATE INDEX IF NOT EXISTS ix_eventforge_inbox_status ON eventforge_inbox (queue, status, available_at);

CREATE TABLE IF NOT EXISTS eventforge_outbox (
    id BIGSERIAL NOT NULL,
    queue VARCHAR(255) NOT NULL,
    message_id VARCHAR(255) NOT NULL,
    envelope TEXT NOT NULL,
    status VARCHAR(16) NOT NULL,
    attempt INTEGER NOT NULL,
    available_at DOUBLE PRECISION NOT NULL,
    lease_owner VARCHAR(64),
    created_at DOUBLE PRECISION NOT NULL,
    processed_at DOUBLE PRECISION,
    error TEXT,
    last_error_at DOUBLE PRECISION,
    event_type VARCHAR(128),
    PRIMARY KEY (id),
    CONSTRAINT uq_eventforge_outbox_message UNIQUE (queue, message_id)
);
CREATE INDEX IF NOT EXISTS ix_eventforge_outbox_claim ON eventforge_outbox (queue, id) WHERE status IN ('pending', 'processing', 'failed');
CREATE INDEX IF NOT EXISTS ix_eventforge_outbox_status ON eventforge_outbox (queue, status, available_at);

-- Task results by task id (@task(results=...)): the record's bytes, whether it is an outcome,
-- and when it expires (UNIX seconds); expired rows read as absent and are purged by writers.
CREATE TABLE IF NOT EXISTS eventforge_results (
    task_id VARCHAR(200) NOT NULL,
    data BYTEA NOT NULL,
    final BOOLEAN NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (task_id)
);
CREATE INDEX IF NOT EXISTS ix_eventforge_results_expires ON eventforge_results (expires_at);
CREATE TABLE IF NOT EXISTS eventforge_claims (
    claim_key VARCHAR(255) NOT NULL,
    held_until DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (claim_key)
);
CREATE INDEX IF NOT EXISTS ix_eventforge_claims_until ON eventforge_claims (held_until);

CREATE TABLE IF NOT EXISTS eventforge_schema_version (
    component VARCHAR(64) NOT NULL,
    version INTEGER NOT NULL,
    installed_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (component)
);

INSERT INTO eventforge_schema_version (component, version, installed_at)
VALUES ('eventforge_sql', 1, extract(epoch FROM now()))
ON CONFLICT (component) DO NOTHING;
