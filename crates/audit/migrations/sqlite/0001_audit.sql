-- Append-only audit logs: one per tenant ("tenant:<id>") and one for instance admin
-- events ("admin"). Rows are only ever inserted; idx is dense from 0 within a log.
-- A rowid table: events are large rows, which WITHOUT ROWID b-trees store poorly.
CREATE TABLE IF NOT EXISTS audit_events (
    log        TEXT    NOT NULL,
    idx        INTEGER NOT NULL,
    event_hash TEXT    NOT NULL,
    event      TEXT    NOT NULL,
    UNIQUE (log, idx)
);

CREATE TRIGGER IF NOT EXISTS audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
