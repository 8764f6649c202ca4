-- Journals that can leave the hot store (see the SQLite migration 0004): compressed
-- bodies (codec 0 plain, 1 zstd), the time each was recorded, and, once archived, no
-- body but the archive segment holding it. Only archiving may change a row.
CREATE TABLE IF NOT EXISTS audit_journal_rows (
    invocation_id VARBINARY(64)  NOT NULL PRIMARY KEY,
    log           VARBINARY(200) NOT NULL,
    idx           BIGINT         NOT NULL,
    recorded_at   BIGINT         NOT NULL,
    codec         SMALLINT       NOT NULL,
    body          LONGBLOB,
    archive       CHAR(64) CHARACTER SET ascii,
    hot           TINYINT AS (body IS NOT NULL) STORED,
    INDEX audit_journal_rows_hot (hot, log, recorded_at)
) ENGINE = InnoDB;
INSERT IGNORE INTO audit_journal_rows (invocation_id, log, idx, recorded_at, codec, body)
    SELECT invocation_id, log, idx, 0, 0, CAST(journal AS BINARY) FROM audit_journals;
DROP TABLE IF EXISTS audit_journals;

CREATE TRIGGER audit_journal_rows_archive_only BEFORE UPDATE ON audit_journal_rows
    FOR EACH ROW BEGIN
        IF NOT (OLD.body IS NOT NULL AND NEW.body IS NULL AND OLD.archive IS NULL AND NEW.archive IS NOT NULL
                AND NEW.invocation_id = OLD.invocation_id AND NEW.log = OLD.log AND NEW.idx = OLD.idx
                AND NEW.recorded_at = OLD.recorded_at AND NEW.codec = OLD.codec) THEN
            SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'journals are append-only; only archiving may drop a body';
        END IF;
    END;
CREATE TRIGGER audit_journal_rows_no_delete BEFORE DELETE ON audit_journal_rows
    FOR EACH ROW SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'journals are never deleted';

CREATE TABLE IF NOT EXISTS audit_journal_archives (
    digest      CHAR(64) CHARACTER SET ascii NOT NULL PRIMARY KEY,
    log         VARBINARY(200) NOT NULL,
    journals    BIGINT NOT NULL,
    bytes       BIGINT NOT NULL,
    archived_at BIGINT NOT NULL
) ENGINE = InnoDB;
