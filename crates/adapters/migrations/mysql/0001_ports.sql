-- Storage for the records, key-value, events and secrets ports on MySQL / MariaDB.
--
-- tenant_id leads every primary key. Keys are VARBINARY so comparison and ordering are
-- by bytes (no collation folds 'a' and 'A', no PAD SPACE folds 'a' and 'a '), exactly as
-- on SQLite and PostgreSQL. Bodies are canonical JSON, which is ASCII.

CREATE TABLE IF NOT EXISTS records (
    tenant_id  VARBINARY(63)   NOT NULL,
    collection VARBINARY(512)  NOT NULL,
    id         VARBINARY(2048) NOT NULL,
    revision   BIGINT          NOT NULL,
    body       LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    PRIMARY KEY (tenant_id, collection, id)
) ENGINE = InnoDB ROW_FORMAT = DYNAMIC;

CREATE TABLE IF NOT EXISTS kv (
    tenant_id VARBINARY(63)   NOT NULL,
    bucket    VARBINARY(512)  NOT NULL,
    `key`     VARBINARY(2048) NOT NULL,
    value     LONGBLOB        NOT NULL,
    PRIMARY KEY (tenant_id, bucket, `key`)
) ENGINE = InnoDB ROW_FORMAT = DYNAMIC;

CREATE TABLE IF NOT EXISTS events (
    tenant_id  VARBINARY(63)  NOT NULL,
    stream     VARBINARY(512) NOT NULL,
    version    BIGINT         NOT NULL,
    event_type VARBINARY(512) NOT NULL,
    data       LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    PRIMARY KEY (tenant_id, stream, version)
) ENGINE = InnoDB ROW_FORMAT = DYNAMIC;

CREATE TABLE IF NOT EXISTS secrets (
    tenant_id VARBINARY(63)  NOT NULL,
    name      VARBINARY(512) NOT NULL,
    version   BIGINT         NOT NULL,
    value     LONGBLOB       NOT NULL,
    PRIMARY KEY (tenant_id, name, version)
) ENGINE = InnoDB ROW_FORMAT = DYNAMIC;
