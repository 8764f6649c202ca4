-- Provisioning state (spec §4.4): a tenant serves traffic only once its stores exist
-- and answer. 'pending' while provisioning runs, 'failed' with the reason when it
-- stopped (re-run with POST /v1/tenants/{id}/provision), 'ready' when done.
ALTER TABLE tenants ADD COLUMN provisioning TEXT NOT NULL DEFAULT 'ready'
    CHECK (provisioning IN ('pending', 'ready', 'failed'));
ALTER TABLE tenants ADD COLUMN provisioning_error TEXT;
