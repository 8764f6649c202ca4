-- Verifiable logs (RFC 9162) on PostgreSQL: the same layout as on SQLite. Several
-- nodes may append: each batch locks the heads of its logs (SELECT … FOR UPDATE), so
-- indexes are dense and trees never fork.
CREATE TABLE IF NOT EXISTS audit_entries (
    log        TEXT   NOT NULL,
    idx        BIGINT NOT NULL,
    event_hash TEXT   NOT NULL,
    leaf_hash  BYTEA  NOT NULL,
    event      TEXT   NOT NULL,
    PRIMARY KEY (log, idx)
);

CREATE TABLE IF NOT EXISTS audit_nodes (
    log   TEXT    NOT NULL,
    level INTEGER NOT NULL,
    idx   BIGINT  NOT NULL,
    hash  BYTEA   NOT NULL,
    PRIMARY KEY (log, level, idx)
);

CREATE TABLE IF NOT EXISTS audit_heads (
    log      TEXT   NOT NULL PRIMARY KEY,
    size     BIGINT NOT NULL,
    frontier BYTEA  NOT NULL
);

CREATE TABLE IF NOT EXISTS audit_checkpoints (
    log  TEXT   NOT NULL,
    size BIGINT NOT NULL,
    root BYTEA  NOT NULL,
    note TEXT   NOT NULL,
    PRIMARY KEY (log, size)
);

CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit table % is append-only', TG_TABLE_NAME;
END $$;

DROP TRIGGER IF EXISTS audit_entries_append_only ON audit_entries;
CREATE TRIGGER audit_entries_append_only BEFORE UPDATE OR DELETE ON audit_entries
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
DROP TRIGGER IF EXISTS audit_nodes_append_only ON audit_nodes;
CREATE TRIGGER audit_nodes_append_only BEFORE UPDATE OR DELETE ON audit_nodes
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
DROP TRIGGER IF EXISTS audit_checkpoints_append_only ON audit_checkpoints;
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
