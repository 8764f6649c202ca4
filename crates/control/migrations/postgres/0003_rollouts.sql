-- Progressive delivery: each rollout's state as one JSON body, its revision guarding
-- every change (compare and swap), and whether it still moves.
CREATE TABLE rollouts (
    rollout_id TEXT PRIMARY KEY,
    route      TEXT NOT NULL,
    revision   BIGINT NOT NULL,
    active     BIGINT NOT NULL,
    body       TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX rollouts_active ON rollouts (active, route);

-- Each node's cumulative per-version counters for a rollout (metrics, not control
-- state: no revision, no change feed).
CREATE TABLE rollout_metrics (
    rollout_id TEXT NOT NULL,
    node_id    TEXT NOT NULL,
    body       TEXT NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (rollout_id, node_id)
);
