-- Instance-wide quota windows: what all nodes together used of each tenant's CPU and
-- network budget in each window (each node adds its own use, batched).
CREATE TABLE tenant_windows (
    tenant_id    VARCHAR(191) NOT NULL,
    resource     VARCHAR(16) NOT NULL,
    window_start BIGINT NOT NULL,
    used         BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, resource, window_start)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
