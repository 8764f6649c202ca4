-- Journals that can leave the hot store (see the SQLite migration 0004): compressed
-- bodies (codec 0 plain, 1 zstd), the time each was recorded, and, once archived, no
-- body but the archive segment holding it. Only archiving may change a row.
CREATE TABLE IF NOT EXISTS audit_journal_rows (
    invocation_id TEXT   NOT NULL PRIMARY KEY,
    log           TEXT   NOT NULL,
    idx           BIGINT NOT NULL,
    recorded_at   BIGINT NOT NULL,
    codec         SMALLINT NOT NULL,
    body          BYTEA,
    archive       TEXT
);
CREATE INDEX IF NOT EXISTS audit_journal_rows_hot ON audit_journal_rows (log, recorded_at) WHERE body IS NOT NULL;
INSERT INTO audit_journal_rows (invocation_id, log, idx, recorded_at, codec, body)
    SELECT invocation_id, log, idx, 0, 0, convert_to(journal, 'UTF8') FROM audit_journals
    ON CONFLICT (invocation_id) DO NOTHING;
DROP TABLE IF EXISTS audit_journals;

CREATE OR REPLACE FUNCTION audit_journal_archive_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.body IS NOT NULL AND NEW.body IS NULL AND OLD.archive IS NULL AND NEW.archive IS NOT NULL
       AND NEW.invocation_id = OLD.invocation_id AND NEW.log = OLD.log AND NEW.idx = OLD.idx
       AND NEW.recorded_at = OLD.recorded_at AND NEW.codec = OLD.codec THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'journals are append-only; only archiving may drop a body';
END $$;
DROP TRIGGER IF EXISTS audit_journal_rows_archive_only ON audit_journal_rows;
CREATE TRIGGER audit_journal_rows_archive_only BEFORE UPDATE OR DELETE ON audit_journal_rows
    FOR EACH ROW EXECUTE FUNCTION audit_journal_archive_only();

CREATE TABLE IF NOT EXISTS audit_journal_archives (
    digest      TEXT   NOT NULL PRIMARY KEY,
    log         TEXT   NOT NULL,
    journals    BIGINT NOT NULL,
    bytes       BIGINT NOT NULL,
    archived_at BIGINT NOT NULL
);
