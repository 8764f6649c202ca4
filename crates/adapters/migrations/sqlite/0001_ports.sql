-- Storage for the records, key-value, events and secrets ports on SQLite.
-- tenant_id leads every primary key: in shared mode all tenants live in one file and
-- every statement is scoped by it; in dedicated mode the file holds one tenant.

CREATE TABLE IF NOT EXISTS records (
    tenant_id  TEXT    NOT NULL,
    collection TEXT    NOT NULL,
    id         TEXT    NOT NULL,
    revision   INTEGER NOT NULL,
    body       TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, collection, id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS kv (
    tenant_id TEXT NOT NULL,
    bucket    TEXT NOT NULL,
    key       TEXT NOT NULL,
    value     BLOB NOT NULL,
    PRIMARY KEY (tenant_id, bucket, key)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS events (
    tenant_id  TEXT    NOT NULL,
    stream     TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    event_type TEXT    NOT NULL,
    data       TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, stream, version)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS secrets (
    tenant_id TEXT    NOT NULL,
    name      TEXT    NOT NULL,
    version   INTEGER NOT NULL,
    value     BLOB    NOT NULL,
    PRIMARY KEY (tenant_id, name, version)
) WITHOUT ROWID;
