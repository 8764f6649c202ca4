-- Invocation journals (spec §6.3): what each invocation observed through its ports,
-- written in the same transaction as its audit entry; the entry's event carries the
-- journal's digest, so a journal cannot be changed without breaking the log.
CREATE TABLE audit_journals (
    invocation_id TEXT    NOT NULL PRIMARY KEY,
    log           TEXT    NOT NULL,
    idx           INTEGER NOT NULL,
    journal       TEXT    NOT NULL
) WITHOUT ROWID;
CREATE TRIGGER audit_journals_no_update BEFORE UPDATE ON audit_journals
BEGIN SELECT RAISE(ABORT, 'journals are append-only'); END;
