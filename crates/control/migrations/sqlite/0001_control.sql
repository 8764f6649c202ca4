-- The node's control data: tenants, their API keys, capabilities and deployments.
CREATE TABLE IF NOT EXISTS settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS tenants (
    id         TEXT PRIMARY KEY,
    mode       TEXT NOT NULL CHECK (mode IN ('shared', 'dedicated')),
    status     TEXT NOT NULL CHECK (status IN ('active', 'suspended')),
    tier       TEXT NOT NULL,
    created_at TEXT NOT NULL
);

-- Keys are stored as SHA-256 of the full key (keys are 256-bit random, so a fast
-- hash is enough); key_id is public and names the key in audit events.
CREATE TABLE IF NOT EXISTS api_keys (
    key_hash   TEXT PRIMARY KEY,
    key_id     TEXT NOT NULL UNIQUE,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    created_at TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS capabilities (
    name       TEXT NOT NULL,
    version    TEXT NOT NULL,
    digest     TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    exports    TEXT NOT NULL,
    imports    TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (name, version)
);

CREATE TABLE IF NOT EXISTS deployments (
    route         TEXT PRIMARY KEY,
    capability    TEXT NOT NULL,
    version       TEXT NOT NULL,
    digest        TEXT NOT NULL,
    allow_hosts   TEXT NOT NULL,
    subscriptions TEXT NOT NULL,
    created_at    TEXT NOT NULL
);
