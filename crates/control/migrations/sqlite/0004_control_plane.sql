-- The control plane (spec §7).

-- Configuration sets (spec §7.1): immutable; each change is a new instance-wide
-- revision holding the whole new set of one scope. A rollback is a new revision whose
-- content is an older one's (`restored_from`).
CREATE TABLE config_versions (
    version       INTEGER PRIMARY KEY,   -- the instance's config revision, from 1
    scope         TEXT NOT NULL,         -- environment:<env> | capability:<name> | tenant:<tenant>:<name>
    content       TEXT NOT NULL,         -- canonical JSON object of string values
    created_at    TEXT NOT NULL,
    actor         TEXT NOT NULL,
    reason        TEXT,
    restored_from INTEGER
);
CREATE INDEX config_versions_scope ON config_versions (scope, version);

-- Small control-plane documents, one JSON body per (kind, id): feature flags, the
-- domain registry, tenants' active domains, environments, releases per environment,
-- revoked token ids, paused deployments.
CREATE TABLE documents (
    kind       TEXT NOT NULL,
    id         TEXT NOT NULL,
    body       TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);

-- A deployment may be gated by a feature flag: requests of tenants for whom the flag
-- is off answer 403.
ALTER TABLE deployments ADD COLUMN flag TEXT;
