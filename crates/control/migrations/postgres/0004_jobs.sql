-- Jobs (spec §9): one row per job, its attempts append-only beside it. A running
-- attempt holds a lease (holder, lease_expires_ms); its slot is the row itself, so a
-- restart neither over-admits nor leaks one. Not control-plane state: no revision, no
-- change feed.
CREATE TABLE jobs (
    job_id          TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL,
    route           TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        BIGINT NOT NULL,
    not_before_ms   BIGINT NOT NULL,
    pool            TEXT,
    spec            TEXT NOT NULL,
    output          TEXT,
    reason          TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX jobs_due ON jobs (status, not_before_ms);
CREATE INDEX jobs_tenant ON jobs (tenant_id, job_id);

CREATE TABLE job_attempts (
    job_id           TEXT NOT NULL,
    attempt_number   BIGINT NOT NULL,
    attempt_id       TEXT NOT NULL,
    tenant_id        TEXT NOT NULL,
    pool             TEXT,
    status           TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    correlation_ids  TEXT NOT NULL,
    error_code       TEXT,
    retryable        BIGINT,
    error_message    TEXT,
    holder           TEXT,
    lease_expires_ms BIGINT NOT NULL,
    PRIMARY KEY (job_id, attempt_number)
);
CREATE INDEX job_attempts_running ON job_attempts (status, lease_expires_ms);
