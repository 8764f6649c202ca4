-- Verifiable logs (RFC 9162): each entry keeps its leaf hash; interior subtree hashes
-- at every fourth level are stored (see src/tree.rs); each log has a head (size and
-- right-edge hashes) updated in the same transaction as its entries; signed
-- checkpoints are kept forever. Entries written before this migration are moved into
-- the new layout by the store at open (from audit_events_legacy).
ALTER TABLE audit_events RENAME TO audit_events_legacy;

CREATE TABLE audit_entries (
    log        TEXT    NOT NULL,
    idx        INTEGER NOT NULL,
    event_hash TEXT    NOT NULL,
    leaf_hash  BLOB    NOT NULL,
    event      TEXT    NOT NULL,
    UNIQUE (log, idx)
);

CREATE TABLE audit_nodes (
    log   TEXT    NOT NULL,
    level INTEGER NOT NULL,
    idx   INTEGER NOT NULL,
    hash  BLOB    NOT NULL,
    PRIMARY KEY (log, level, idx)
) WITHOUT ROWID;

CREATE TABLE audit_heads (
    log      TEXT    NOT NULL PRIMARY KEY,
    size     INTEGER NOT NULL,
    frontier BLOB    NOT NULL
) WITHOUT ROWID;

CREATE TABLE audit_checkpoints (
    log  TEXT    NOT NULL,
    size INTEGER NOT NULL,
    root BLOB    NOT NULL,
    note TEXT    NOT NULL,
    PRIMARY KEY (log, size)
) WITHOUT ROWID;

CREATE TRIGGER audit_entries_no_update BEFORE UPDATE ON audit_entries
BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END;
CREATE TRIGGER audit_entries_no_delete BEFORE DELETE ON audit_entries
BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END;
CREATE TRIGGER audit_nodes_no_update BEFORE UPDATE ON audit_nodes
BEGIN SELECT RAISE(ABORT, 'audit tree hashes are append-only'); END;
CREATE TRIGGER audit_nodes_no_delete BEFORE DELETE ON audit_nodes
BEGIN SELECT RAISE(ABORT, 'audit tree hashes are append-only'); END;
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'signed checkpoints are append-only'); END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'signed checkpoints are append-only'); END;
