-- One-round-trip blind upsert under row-level security (see 0002).
CREATE OR REPLACE FUNCTION runplane_put_record(p_tenant TEXT, p_collection TEXT, p_id TEXT, p_body TEXT)
RETURNS BIGINT
LANGUAGE plpgsql SECURITY INVOKER VOLATILE
AS $$
DECLARE rev BIGINT;
BEGIN
    PERFORM set_config('runplane.tenant', p_tenant, true);
    INSERT INTO records (tenant_id, collection, id, revision, body) VALUES (p_tenant, p_collection, p_id, 1, p_body)
        ON CONFLICT (tenant_id, collection, id) DO UPDATE SET revision = records.revision + 1, body = EXCLUDED.body
        RETURNING records.revision INTO rev;
    RETURN rev;
END $$;
