-- Invocation journals, written with their audit entries (see the SQLite migration).
CREATE TABLE IF NOT EXISTS audit_journals (
    invocation_id TEXT   NOT NULL PRIMARY KEY,
    log           TEXT   NOT NULL,
    idx           BIGINT NOT NULL,
    journal       TEXT   NOT NULL
);
DROP TRIGGER IF EXISTS audit_journals_append_only ON audit_journals;
CREATE TRIGGER audit_journals_append_only BEFORE UPDATE ON audit_journals
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
