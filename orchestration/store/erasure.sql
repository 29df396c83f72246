-- Deletion requests (orchestration.pipeline.forget), created on the first request: the criteria are stored as
-- field + SHA-256 of the value, never the value.
CREATE TABLE IF NOT EXISTS monitor.forget_requests (
    request_id VARCHAR PRIMARY KEY,
    requested_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor VARCHAR,
    reason VARCHAR,
    criteria VARCHAR NOT NULL,         -- JSON: [{field, column, value_sha256}] and the number of ids
    deleted VARCHAR NOT NULL,          -- JSON: {table: rows}
    record_ids VARCHAR[] NOT NULL,
    windows VARCHAR[] NOT NULL,
    trained_versions VARCHAR[] NOT NULL,
    derived_versions VARCHAR[] NOT NULL,
    evaluated_versions VARCHAR[] NOT NULL,
    champion_before VARCHAR,
    champion_after VARCHAR,
    retrain_windows VARCHAR[] NOT NULL,
    retrain_run_ids VARCHAR[] NOT NULL,
    status VARCHAR NOT NULL,           -- deleted | retrain_requested | retrain_not_needed | retrain_failed
    report_path VARCHAR
);
