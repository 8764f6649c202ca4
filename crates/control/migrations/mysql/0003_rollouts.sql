-- Progressive delivery: each rollout's state as one JSON body, its revision guarding
-- every change (compare and swap), and whether it still moves.
CREATE TABLE rollouts (
    rollout_id VARCHAR(191) PRIMARY KEY,
    route      VARCHAR(191) NOT NULL,
    revision   BIGINT NOT NULL,
    active     BIGINT NOT NULL,
    body       MEDIUMTEXT NOT NULL,
    updated_at TEXT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX rollouts_active ON rollouts (active, route);

-- Each node's cumulative per-version counters for a rollout (metrics, not control
-- state: no revision, no change feed).
CREATE TABLE rollout_metrics (
    rollout_id VARCHAR(191) NOT NULL,
    node_id    VARCHAR(191) NOT NULL,
    body       MEDIUMTEXT NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (rollout_id, node_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
