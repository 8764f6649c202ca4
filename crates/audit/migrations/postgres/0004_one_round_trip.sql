-- A batch in one round trip: the node plans the batch from the heads it last wrote
-- (cached), and one call checks those heads are still current, writes the entries,
-- tree nodes and journals, and moves the heads, in the call's own transaction.
-- A head another node moved meanwhile fails the call with SQLSTATE RPA01 and
-- nothing is written: the node reads the heads again and plans the batch anew.
CREATE OR REPLACE FUNCTION audit_append(
    head_logs text[], old_sizes bigint[], new_sizes bigint[], frontiers bytea[],
    e_logs text[], e_idx bigint[], e_hashes text[], e_leaves bytea[], e_events text[],
    n_logs text[], n_levels integer[], n_idx bigint[], n_hashes bytea[],
    j_ids text[], j_logs text[], j_idx bigint[], j_at bigint[], j_codecs smallint[], j_bodies bytea[]
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    current_heads integer;
BEGIN
    -- A log's first batch makes its head row (in log order, like the locks below).
    INSERT INTO audit_heads (log, size, frontier)
        SELECT n.log, 0, ''::bytea FROM UNNEST(head_logs, old_sizes) AS n(log, old) WHERE n.old = 0 ORDER BY n.log
        ON CONFLICT (log) DO NOTHING;
    -- Lock the heads in log order, so two nodes' batches never deadlock; a batch on
    -- the same log waits here for the other to commit.
    PERFORM 1 FROM audit_heads WHERE log = ANY(head_logs) ORDER BY log FOR UPDATE;
    SELECT count(*) INTO current_heads
        FROM audit_heads AS h JOIN UNNEST(head_logs, old_sizes) AS n(log, old) ON h.log = n.log AND h.size = n.old;
    IF current_heads <> cardinality(head_logs) THEN
        RAISE EXCEPTION 'an audit head moved after this batch was planned' USING ERRCODE = 'RPA01';
    END IF;
    INSERT INTO audit_entries (log, idx, event_hash, leaf_hash, event)
        SELECT * FROM UNNEST(e_logs, e_idx, e_hashes, e_leaves, e_events);
    INSERT INTO audit_nodes (log, level, idx, hash)
        SELECT * FROM UNNEST(n_logs, n_levels, n_idx, n_hashes);
    INSERT INTO audit_journal_rows (invocation_id, log, idx, recorded_at, codec, body)
        SELECT * FROM UNNEST(j_ids, j_logs, j_idx, j_at, j_codecs, j_bodies);
    UPDATE audit_heads AS h SET size = n.size, frontier = n.frontier
        FROM UNNEST(head_logs, new_sizes, frontiers) AS n(log, size, frontier) WHERE h.log = n.log;
END $$;
