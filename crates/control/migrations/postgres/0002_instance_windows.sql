-- Instance-wide quota windows: what all nodes together used of each tenant's CPU and
-- network budget in each window (each node adds its own use, batched).
CREATE TABLE tenant_windows (
    tenant_id    TEXT NOT NULL,
    resource     TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    used         BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, resource, window_start)
);
