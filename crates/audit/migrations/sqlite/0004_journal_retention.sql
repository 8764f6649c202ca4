-- Journals that can leave the hot store (journal retention). A journal row is written
-- with its audit entry, in log order (the rowid grows with time), so inserts append
-- instead of landing on a random page of a table keyed by invocation id. `body` is the
-- journal's canonical JSON, compressed as `codec` says (0 plain, 1 zstd); once the
-- journal's retention window has passed, it is copied into an archive segment on the
-- blob backend and `body` becomes NULL, `archive` naming the segment (its SHA-256).
-- The event in the Merkle leaf carries the journal's digest, so an archived journal
-- is checked against the log when it is read back.
CREATE TABLE audit_journal_rows (
    invocation_id TEXT    NOT NULL,
    log           TEXT    NOT NULL,
    idx           INTEGER NOT NULL,
    recorded_at   INTEGER NOT NULL,
    codec         INTEGER NOT NULL,
    body          BLOB,
    archive       TEXT
);
CREATE UNIQUE INDEX audit_journal_rows_invocation ON audit_journal_rows (invocation_id);
-- The journals still hot, by log and age: what archiving looks for. Archived rows leave it.
CREATE INDEX audit_journal_rows_hot ON audit_journal_rows (log, recorded_at) WHERE body IS NOT NULL;

-- Journals written before this layout: kept as they are (plain), archived on the first
-- pass that finds them past any window (recorded_at 0).
INSERT INTO audit_journal_rows (invocation_id, log, idx, recorded_at, codec, body)
    SELECT invocation_id, log, idx, 0, 0, CAST(journal AS BLOB) FROM audit_journals ORDER BY log, idx;
DROP TRIGGER IF EXISTS audit_journals_no_update;
DROP TABLE audit_journals;

-- Only archiving may change a journal row: the body goes, the archive is named, and
-- nothing else moves; rows are never deleted.
CREATE TRIGGER audit_journal_rows_archive_only BEFORE UPDATE ON audit_journal_rows
WHEN NOT (OLD.body IS NOT NULL AND NEW.body IS NULL AND OLD.archive IS NULL AND NEW.archive IS NOT NULL
          AND NEW.invocation_id = OLD.invocation_id AND NEW.log = OLD.log AND NEW.idx = OLD.idx
          AND NEW.recorded_at = OLD.recorded_at AND NEW.codec = OLD.codec)
BEGIN SELECT RAISE(ABORT, 'journals are append-only; only archiving may drop a body'); END;
CREATE TRIGGER audit_journal_rows_no_delete BEFORE DELETE ON audit_journal_rows
BEGIN SELECT RAISE(ABORT, 'journals are never deleted'); END;

-- Archive segments on the blob backend: which journals each holds.
CREATE TABLE audit_journal_archives (
    digest      TEXT    NOT NULL PRIMARY KEY,
    log         TEXT    NOT NULL,
    journals    INTEGER NOT NULL,
    bytes       INTEGER NOT NULL,
    archived_at INTEGER NOT NULL
) WITHOUT ROWID;
