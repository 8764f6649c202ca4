-- The control store on MySQL/MariaDB (database <database>_control), shared by every node
-- of an instance. The same tables as the embedded home's migrations 0001-0005.
CREATE TABLE settings (
    name  VARCHAR(191) PRIMARY KEY,
    value TEXT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE tenants (
    id                 VARCHAR(191) PRIMARY KEY,
    mode               VARCHAR(16) NOT NULL CHECK (mode IN ('shared', 'dedicated')),
    status             VARCHAR(16) NOT NULL CHECK (status IN ('active', 'suspended')),
    tier               TEXT NOT NULL,
    created_at         TEXT NOT NULL,
    provisioning       VARCHAR(16) NOT NULL DEFAULT 'ready' CHECK (provisioning IN ('pending', 'ready', 'failed')),
    provisioning_error TEXT
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE api_keys (
    key_hash   VARCHAR(64) PRIMARY KEY,
    key_id     VARCHAR(64) NOT NULL UNIQUE,
    tenant_id  VARCHAR(191) NOT NULL,
    created_at TEXT NOT NULL,
    FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE capabilities (
    name       VARCHAR(191) NOT NULL,
    version    VARCHAR(128) NOT NULL,
    digest     VARCHAR(80) NOT NULL,
    size_bytes BIGINT NOT NULL,
    exports    MEDIUMTEXT NOT NULL,
    imports    TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (name, version)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE deployments (
    route         VARCHAR(128) PRIMARY KEY,
    capability    VARCHAR(128) NOT NULL,
    version       VARCHAR(128) NOT NULL,
    digest        VARCHAR(80) NOT NULL,
    allow_hosts   TEXT NOT NULL,
    subscriptions TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    flag          TEXT
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE tenant_quotas (
    tenant_id  VARCHAR(64) PRIMARY KEY,
    quota      TEXT NOT NULL,
    updated_at TEXT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE tenant_usage (
    tenant_id  VARCHAR(64) PRIMARY KEY,
    disk_bytes BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE contracts (
    contract_id VARCHAR(80) PRIMARY KEY,
    route       VARCHAR(128) NOT NULL,
    contract    MEDIUMTEXT NOT NULL,
    created_at  TEXT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE config_versions (
    version       BIGINT PRIMARY KEY,
    scope         VARCHAR(191) NOT NULL,
    content       MEDIUMTEXT NOT NULL,
    created_at    TEXT NOT NULL,
    actor         TEXT NOT NULL,
    reason        TEXT,
    restored_from BIGINT
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX config_versions_scope ON config_versions (scope, version);

CREATE TABLE documents (
    kind       VARCHAR(32) NOT NULL,
    id         VARCHAR(191) NOT NULL,
    body       MEDIUMTEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (kind, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE control_head (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    revision BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
INSERT INTO control_head (id, revision) VALUES (1, 0);

CREATE TABLE control_changes (
    revision BIGINT PRIMARY KEY,
    kind     VARCHAR(32) NOT NULL,
    id       VARCHAR(191) NOT NULL,
    at_ms    BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE components (
    digest     VARCHAR(80) PRIMARY KEY,
    bytes      LONGBLOB NOT NULL,
    created_at TEXT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE cluster_nodes (
    node_id      VARCHAR(64) PRIMARY KEY,
    region       TEXT NOT NULL,
    address      TEXT NOT NULL,
    version      VARCHAR(128) NOT NULL,
    started_at   TEXT NOT NULL,
    heartbeat_ms BIGINT NOT NULL,
    state        VARCHAR(16) NOT NULL CHECK (state IN ('ready', 'draining', 'gone')),
    in_flight    BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE leases (
    name       VARCHAR(191) PRIMARY KEY,
    holder     VARCHAR(64) NOT NULL,
    epoch      BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE lease_epochs (
    name        VARCHAR(191) NOT NULL,
    epoch       BIGINT NOT NULL,
    holder      VARCHAR(64) NOT NULL,
    acquired_ms BIGINT NOT NULL,
    -- When the lease taken over had expired: never after acquired_ms, so no two
    -- epochs' holders acted at once.
    previous_expired_ms BIGINT NOT NULL,
    PRIMARY KEY (name, epoch)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE idempotency (
    scope      VARCHAR(191) NOT NULL,
    idem_key   VARCHAR(191) NOT NULL,
    request    TEXT NOT NULL,
    status     BIGINT NOT NULL,
    response   MEDIUMTEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (scope, idem_key)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
