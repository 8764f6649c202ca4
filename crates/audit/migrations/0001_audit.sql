-- Append-only audit logs: one per tenant ("tenant:<id>") and one for instance admin
-- events ("admin"). Rows are only ever inserted; idx is dense from 0 within a log.
CREATE TABLE IF NOT EXISTS audit_events (
    log        TEXT    NOT NULL,
    idx        INTEGER NOT NULL,
    event_hash TEXT    NOT NULL,
    event      TEXT    NOT NULL,
    PRIMARY KEY (log, idx)
) WITHOUT ROWID;

CREATE TRIGGER IF NOT EXISTS audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
