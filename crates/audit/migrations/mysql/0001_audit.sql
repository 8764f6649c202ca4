-- Verifiable logs (RFC 9162) on MySQL / MariaDB: the same layout as on SQLite and
-- PostgreSQL, in a database of their own. Several nodes may append: each batch locks
-- the heads of its logs (SELECT … FOR UPDATE), so indexes stay dense and trees never fork.
CREATE TABLE IF NOT EXISTS audit_entries (
    log        VARBINARY(200) NOT NULL,
    idx        BIGINT         NOT NULL,
    event_hash CHAR(64) CHARACTER SET ascii NOT NULL,
    leaf_hash  BINARY(32)     NOT NULL,
    event      LONGTEXT CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    PRIMARY KEY (log, idx)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS audit_nodes (
    log   VARBINARY(200) NOT NULL,
    level INT            NOT NULL,
    idx   BIGINT         NOT NULL,
    hash  BINARY(32)     NOT NULL,
    PRIMARY KEY (log, level, idx)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS audit_heads (
    log      VARBINARY(200) NOT NULL PRIMARY KEY,
    size     BIGINT         NOT NULL,
    frontier BLOB           NOT NULL
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS audit_checkpoints (
    log  VARBINARY(200) NOT NULL,
    size BIGINT         NOT NULL,
    root BINARY(32)     NOT NULL,
    note TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    PRIMARY KEY (log, size)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS audit_journals (
    invocation_id VARBINARY(64)  NOT NULL PRIMARY KEY,
    log           VARBINARY(200) NOT NULL,
    idx           BIGINT         NOT NULL,
    journal       LONGTEXT CHARACTER SET ascii COLLATE ascii_bin NOT NULL
) ENGINE = InnoDB;

CREATE TRIGGER audit_entries_no_update BEFORE UPDATE ON audit_entries
    FOR EACH ROW SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'audit entries are append-only';
CREATE TRIGGER audit_entries_no_delete BEFORE DELETE ON audit_entries
    FOR EACH ROW SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'audit entries are append-only';
CREATE TRIGGER audit_nodes_no_update BEFORE UPDATE ON audit_nodes
    FOR EACH ROW SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'audit tree hashes are append-only';
CREATE TRIGGER audit_nodes_no_delete BEFORE DELETE ON audit_nodes
    FOR EACH ROW SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'audit tree hashes are append-only';
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
    FOR EACH ROW SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'signed checkpoints are append-only';
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
    FOR EACH ROW SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'signed checkpoints are append-only';
CREATE TRIGGER audit_journals_no_update BEFORE UPDATE ON audit_journals
    FOR EACH ROW SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'journals are append-only';
