-- Jobs (spec §9): one row per job, its attempts append-only beside it. A running
-- attempt holds a lease (holder, lease_expires_ms); its slot is the row itself, so a
-- restart neither over-admits nor leaks one. Not control-plane state: no revision, no
-- change feed.
CREATE TABLE jobs (
    job_id          VARCHAR(64) PRIMARY KEY,
    tenant_id       VARCHAR(64) NOT NULL,
    route           VARCHAR(191) NOT NULL,
    idempotency_key VARCHAR(191) NOT NULL,
    status          VARCHAR(16) NOT NULL,
    attempts        BIGINT NOT NULL,
    not_before_ms   BIGINT NOT NULL,
    pool            VARCHAR(64),
    spec            MEDIUMTEXT NOT NULL,
    output          MEDIUMTEXT,
    reason          TEXT,
    created_at      VARCHAR(40) NOT NULL,
    updated_at      VARCHAR(40) NOT NULL,
    UNIQUE (tenant_id, idempotency_key)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX jobs_due ON jobs (status, not_before_ms);
CREATE INDEX jobs_tenant ON jobs (tenant_id, job_id);

CREATE TABLE job_attempts (
    job_id           VARCHAR(64) NOT NULL,
    attempt_number   BIGINT NOT NULL,
    attempt_id       VARCHAR(64) NOT NULL,
    tenant_id        VARCHAR(64) NOT NULL,
    pool             VARCHAR(64),
    status           VARCHAR(16) NOT NULL,
    created_at       VARCHAR(40) NOT NULL,
    updated_at       VARCHAR(40) NOT NULL,
    correlation_ids  TEXT NOT NULL,
    error_code       VARCHAR(64),
    retryable        BIGINT,
    error_message    TEXT,
    holder           VARCHAR(191),
    lease_expires_ms BIGINT NOT NULL,
    PRIMARY KEY (job_id, attempt_number)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX job_attempts_running ON job_attempts (status, lease_expires_ms);
