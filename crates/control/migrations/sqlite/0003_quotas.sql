-- Tenant quotas (spec §5.2). A tenant without a row has its tier's defaults.
CREATE TABLE tenant_quotas (
    tenant_id  TEXT PRIMARY KEY,
    quota      TEXT NOT NULL,          -- ExecutionQuota as JSON
    updated_at TEXT NOT NULL
);

-- Bytes each tenant's records, key-value state, events and blobs hold, as metered on
-- every write; kept here so the disk quota survives restarts.
CREATE TABLE tenant_usage (
    tenant_id  TEXT PRIMARY KEY,
    disk_bytes INTEGER NOT NULL
);

-- Runtime contracts (spec §6.6), bound to the task export deployed on a route.
CREATE TABLE contracts (
    contract_id TEXT PRIMARY KEY,      -- sha256:<hex> of the canonical contract
    route       TEXT NOT NULL,
    contract    TEXT NOT NULL,         -- RuntimeContract as canonical JSON
    created_at  TEXT NOT NULL
);
