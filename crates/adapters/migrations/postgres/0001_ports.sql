-- Storage for the records, key-value, events and secrets ports on PostgreSQL.
--
-- tenant_id leads every primary key. Text keys use the "C" collation so ordering is by
-- bytes, exactly as on SQLite and MySQL (the same capability gets the same pages).
-- Row-level security is ENABLEd and FORCEd on every table: a session sees only the rows
-- of the tenant set with set_config('runplane.tenant', ..., true) in its transaction,
-- and nothing when it is unset. The runtime role owns none of these tables.

CREATE TABLE IF NOT EXISTS records (
    tenant_id  TEXT COLLATE "C" NOT NULL,
    collection TEXT COLLATE "C" NOT NULL,
    id         TEXT COLLATE "C" NOT NULL,
    revision   BIGINT NOT NULL,
    body       TEXT NOT NULL,
    doc        JSONB GENERATED ALWAYS AS (body::jsonb) STORED,
    PRIMARY KEY (tenant_id, collection, id)
);

CREATE TABLE IF NOT EXISTS kv (
    tenant_id TEXT COLLATE "C" NOT NULL,
    bucket    TEXT COLLATE "C" NOT NULL,
    key       TEXT COLLATE "C" NOT NULL,
    value     BYTEA NOT NULL,
    PRIMARY KEY (tenant_id, bucket, key)
);

CREATE TABLE IF NOT EXISTS events (
    tenant_id  TEXT COLLATE "C" NOT NULL,
    stream     TEXT COLLATE "C" NOT NULL,
    version    BIGINT NOT NULL,
    event_type TEXT NOT NULL,
    data       TEXT NOT NULL,
    PRIMARY KEY (tenant_id, stream, version)
);

CREATE TABLE IF NOT EXISTS secrets (
    tenant_id TEXT COLLATE "C" NOT NULL,
    name      TEXT COLLATE "C" NOT NULL,
    version   BIGINT NOT NULL,
    value     BYTEA NOT NULL,
    PRIMARY KEY (tenant_id, name, version)
);

DO $$
DECLARE t TEXT;
BEGIN
    FOREACH t IN ARRAY ARRAY['records', 'kv', 'events', 'secrets'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE tablename = t AND policyname = 'tenant_isolation') THEN
            EXECUTE format(
                'CREATE POLICY tenant_isolation ON %I
                   USING (tenant_id = current_setting(''runplane.tenant'', true))
                   WITH CHECK (tenant_id = current_setting(''runplane.tenant'', true))', t);
        END IF;
    END LOOP;
END $$;
