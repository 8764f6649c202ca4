-- The change feed (shared with the PostgreSQL and MySQL homes, where other nodes
-- follow it): every mutation of control state bumps the one revision and records what
-- it changed, in the same transaction.
ALTER TABLE settings RENAME COLUMN key TO name;

CREATE TABLE control_head (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    revision INTEGER NOT NULL
);
INSERT INTO control_head (id, revision) VALUES (1, 0);

CREATE TABLE control_changes (
    revision INTEGER PRIMARY KEY,
    kind     TEXT NOT NULL,
    id       TEXT NOT NULL,
    at_ms    INTEGER NOT NULL
);

-- Content-addressed component bytes (the embedded home keeps them as files instead;
-- the table exists so every home has the same schema).
CREATE TABLE components (
    digest     TEXT PRIMARY KEY,
    bytes      BLOB NOT NULL,
    created_at TEXT NOT NULL
);

-- Membership: one row per node, its heartbeat in the store's clock (ms since the epoch).
CREATE TABLE cluster_nodes (
    node_id      TEXT PRIMARY KEY,
    region       TEXT NOT NULL,
    address      TEXT NOT NULL,
    version      TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    heartbeat_ms INTEGER NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('ready', 'draining', 'gone')),
    in_flight    INTEGER NOT NULL
);

-- Leases for once-per-instance work, with a fencing epoch that only grows.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    epoch      INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE TABLE lease_epochs (
    name        TEXT NOT NULL,
    epoch       INTEGER NOT NULL,
    holder      TEXT NOT NULL,
    acquired_ms INTEGER NOT NULL,
    -- When the lease taken over had expired: never after acquired_ms, so no two
    -- epochs' holders acted at once.
    previous_expired_ms INTEGER NOT NULL,
    PRIMARY KEY (name, epoch)
);

-- Idempotency keys of creating calls (spec §12): the first answer is kept and repeated.
CREATE TABLE idempotency (
    scope      TEXT NOT NULL,
    idem_key   TEXT NOT NULL,
    request    TEXT NOT NULL,
    status     INTEGER NOT NULL,
    response   TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (scope, idem_key)
);
