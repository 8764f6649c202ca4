-- One-round-trip reads under row-level security. The function sets the tenant with
-- set_config(..., true) and then reads, inside the one implicit transaction of the
-- calling statement, so the setting ends with that statement (a pooled connection
-- carries nothing over). SECURITY INVOKER: the policies of the calling role apply.
CREATE OR REPLACE FUNCTION runplane_get_record(p_tenant TEXT, p_collection TEXT, p_id TEXT)
RETURNS TABLE (revision BIGINT, body TEXT)
LANGUAGE plpgsql SECURITY INVOKER VOLATILE
AS $$
BEGIN
    PERFORM set_config('runplane.tenant', p_tenant, true);
    RETURN QUERY SELECT r.revision, r.body FROM records r
        WHERE r.tenant_id = p_tenant AND r.collection = p_collection AND r.id = p_id;
END $$;
