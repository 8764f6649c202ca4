-- Events are stored packed (zstd against the dictionary built into Runplane, codec 1;
-- see src/store/packed.rs); rows written before keep their plain JSON (codec 0).
-- The leaf hash is over the canonical JSON either way.
ALTER TABLE audit_entries ADD COLUMN codec INTEGER NOT NULL DEFAULT 0;
