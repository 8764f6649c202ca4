-- The control store on PostgreSQL (schema runplane_control), shared by every node of an
-- instance. The same tables as the embedded home's migrations 0001-0005.
CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE tenants (
    id                 TEXT PRIMARY KEY,
    mode               TEXT NOT NULL CHECK (mode IN ('shared', 'dedicated')),
    status             TEXT NOT NULL CHECK (status IN ('active', 'suspended')),
    tier               TEXT NOT NULL,
    created_at         TEXT NOT NULL,
    provisioning       TEXT NOT NULL DEFAULT 'ready' CHECK (provisioning IN ('pending', 'ready', 'failed')),
    provisioning_error TEXT
);

CREATE TABLE api_keys (
    key_hash   TEXT PRIMARY KEY,
    key_id     TEXT NOT NULL UNIQUE,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    created_at TEXT NOT NULL
);

CREATE TABLE capabilities (
    name       TEXT NOT NULL,
    version    TEXT NOT NULL,
    digest     TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    exports    TEXT NOT NULL,
    imports    TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (name, version)
);

CREATE TABLE deployments (
    route         TEXT PRIMARY KEY,
    capability    TEXT NOT NULL,
    version       TEXT NOT NULL,
    digest        TEXT NOT NULL,
    allow_hosts   TEXT NOT NULL,
    subscriptions TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    flag          TEXT
);

CREATE TABLE tenant_quotas (
    tenant_id  TEXT PRIMARY KEY,
    quota      TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE tenant_usage (
    tenant_id  TEXT PRIMARY KEY,
    disk_bytes BIGINT NOT NULL
);

CREATE TABLE contracts (
    contract_id TEXT PRIMARY KEY,
    route       TEXT NOT NULL,
    contract    TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

CREATE TABLE config_versions (
    version       BIGINT PRIMARY KEY,
    scope         TEXT NOT NULL,
    content       TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    actor         TEXT NOT NULL,
    reason        TEXT,
    restored_from BIGINT
);
CREATE INDEX config_versions_scope ON config_versions (scope, version);

CREATE TABLE documents (
    kind       TEXT NOT NULL,
    id         TEXT NOT NULL,
    body       TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);

CREATE TABLE control_head (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    revision BIGINT NOT NULL
);
INSERT INTO control_head (id, revision) VALUES (1, 0);

CREATE TABLE control_changes (
    revision BIGINT PRIMARY KEY,
    kind     TEXT NOT NULL,
    id       TEXT NOT NULL,
    at_ms    BIGINT NOT NULL
);

CREATE TABLE components (
    digest     TEXT PRIMARY KEY,
    bytes      BYTEA NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE cluster_nodes (
    node_id      TEXT PRIMARY KEY,
    region       TEXT NOT NULL,
    address      TEXT NOT NULL,
    version      TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    heartbeat_ms BIGINT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('ready', 'draining', 'gone')),
    in_flight    BIGINT NOT NULL
);

CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    epoch      BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);
CREATE TABLE lease_epochs (
    name        TEXT NOT NULL,
    epoch       BIGINT NOT NULL,
    holder      TEXT NOT NULL,
    acquired_ms BIGINT NOT NULL,
    -- When the lease taken over had expired: never after acquired_ms, so no two
    -- epochs' holders acted at once.
    previous_expired_ms BIGINT NOT NULL,
    PRIMARY KEY (name, epoch)
);

CREATE TABLE idempotency (
    scope      TEXT NOT NULL,
    idem_key   TEXT NOT NULL,
    request    TEXT NOT NULL,
    status     BIGINT NOT NULL,
    response   TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (scope, idem_key)
);
