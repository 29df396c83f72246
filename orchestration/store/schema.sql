-- The warehouse schema, run by Warehouse.init_schema (idempotent); orchestration/store/warehouse.py
-- describes each table. Columns added later are ALTER ... ADD COLUMN IF NOT EXISTS, so old warehouses migrate.
CREATE SCHEMA IF NOT EXISTS raw;
CREATE SCHEMA IF NOT EXISTS curated;
CREATE SCHEMA IF NOT EXISTS train;
CREATE SCHEMA IF NOT EXISTS monitor;
CREATE TABLE IF NOT EXISTS raw.windows (
    window_key VARCHAR PRIMARY KEY,
    file_name VARCHAR NOT NULL,
    file_sha256 VARCHAR NOT NULL,
    file_mtime_ns BIGINT,
    source_rows BIGINT NOT NULL,
    parsed_rows BIGINT NOT NULL,
    rejected_rows BIGINT NOT NULL,
    ingested_at TIMESTAMPTZ NOT NULL,
    dagster_run_id VARCHAR
);
CREATE TABLE IF NOT EXISTS raw.events (
    window_key VARCHAR NOT NULL,
    row_number BIGINT NOT NULL,
    record_id VARCHAR NOT NULL,
    ts TIMESTAMPTZ
);
CREATE TABLE IF NOT EXISTS raw.staged_text (  -- deleted when the window is curated (PII boundary)
    window_key VARCHAR NOT NULL,
    row_number BIGINT NOT NULL,
    text VARCHAR USING COMPRESSION uncompressed,
    metadata VARCHAR USING COMPRESSION uncompressed
);
CREATE TABLE IF NOT EXISTS raw.rejects (
    window_key VARCHAR NOT NULL,
    row_number BIGINT NOT NULL,
    raw VARCHAR,
    error VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS curated.events (
    window_key VARCHAR NOT NULL,
    row_number BIGINT NOT NULL,
    record_id VARCHAR NOT NULL,
    text VARCHAR NOT NULL,
    ts TIMESTAMPTZ,
    metadata VARCHAR
);
CREATE TABLE IF NOT EXISTS curated.quarantine (
    window_key VARCHAR NOT NULL,
    row_number BIGINT NOT NULL,
    record_id VARCHAR NOT NULL,
    text VARCHAR,
    ts TIMESTAMPTZ,
    metadata VARCHAR,
    rule VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    gx_run_id VARCHAR,
    quarantined_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
ALTER TABLE curated.quarantine ADD COLUMN IF NOT EXISTS duplicate_of_window VARCHAR;
ALTER TABLE curated.quarantine ADD COLUMN IF NOT EXISTS duplicate_of_row BIGINT;
CREATE TABLE IF NOT EXISTS curated.window_results (
    window_key VARCHAR NOT NULL,
    gx_run_id VARCHAR NOT NULL,
    rule VARCHAR NOT NULL,
    success BOOLEAN NOT NULL,
    observed VARCHAR
);
CREATE TABLE IF NOT EXISTS curated.windows (
    window_key VARCHAR PRIMARY KEY,
    curated_rows BIGINT NOT NULL,
    quarantined_rows BIGINT NOT NULL,
    approved_at TIMESTAMPTZ NOT NULL,
    dagster_run_id VARCHAR
);
CREATE TABLE IF NOT EXISTS train.ledger (
    model_version VARCHAR NOT NULL,
    mlflow_run_id VARCHAR NOT NULL,
    window_key VARCHAR NOT NULL,
    row_number BIGINT NOT NULL,
    record_id VARCHAR NOT NULL,
    role VARCHAR NOT NULL,            -- train | new_eval | retention_eval
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS train.updates (
    model_version VARCHAR PRIMARY KEY,
    mlflow_run_id VARCHAR NOT NULL,
    parent_version VARCHAR,
    snapshot_id VARCHAR NOT NULL,
    window_keys VARCHAR[] NOT NULL,
    train_rows BIGINT NOT NULL,
    champion_new_loss DOUBLE,
    challenger_new_loss DOUBLE,
    champion_new_bpb DOUBLE,
    challenger_new_bpb DOUBLE,
    champion_retention_bpb DOUBLE,
    challenger_retention_bpb DOUBLE,
    promoted BOOLEAN NOT NULL,
    reason VARCHAR NOT NULL,
    trigger VARCHAR,
    dagster_run_id VARCHAR,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS train.replay_buffer (   -- window-balanced reservoir (training.replay)
    window_key VARCHAR NOT NULL,
    row_number BIGINT NOT NULL,
    record_id VARCHAR NOT NULL,
    text VARCHAR NOT NULL,
    reservoir_key DOUBLE NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS monitor.eval_matrix (    -- R[i][j] in bits/byte, one row per (version, window, phase)
    model_version VARCHAR NOT NULL,
    parent_version VARCHAR,
    trained_through VARCHAR NOT NULL,  -- last window of the update that produced model_version
    eval_window VARCHAR NOT NULL,
    phase VARCHAR NOT NULL,            -- before (parent, forward) | after (challenger)
    loss DOUBLE NOT NULL,              -- nats/token
    bpb DOUBLE NOT NULL,               -- bits per UTF-8 byte
    texts BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    mlflow_run_id VARCHAR,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS train.rollbacks (
    from_version VARCHAR,
    to_version VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    actor VARCHAR,
    rolled_back_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS train.retired_versions (  -- versions that saw deleted records (orchestration.pipeline.forget)
    model_version VARCHAR PRIMARY KEY,
    request_id VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    retired_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS monitor.window_profile (
    window_key VARCHAR PRIMARY KEY,
    reference_keys VARCHAR[] NOT NULL,
    rows BIGINT NOT NULL,
    sample_rows BIGINT NOT NULL,
    token_js DOUBLE,
    token_js_p DOUBLE,
    token_js_threshold DOUBLE,
    oov_rate DOUBLE,
    oov_rate_p DOUBLE,
    oov_rate_threshold DOUBLE,
    length_ks DOUBLE,
    length_ks_p DOUBLE,
    length_ks_threshold DOUBLE,
    bytes_per_token DOUBLE,
    bytes_per_token_p DOUBLE,
    bytes_per_token_threshold DOUBLE,
    lm_bpb DOUBLE,
    lm_bpb_p DOUBLE,
    lm_bpb_threshold DOUBLE,
    embedding_mmd2 DOUBLE,
    embedding_mmd2_p DOUBLE,
    embedding_mmd2_threshold DOUBLE,
    quarantine_rate DOUBLE,
    quarantine_rate_p DOUBLE,
    quarantine_rate_threshold DOUBLE,
    alpha DOUBLE NOT NULL,
    exceeded VARCHAR[] NOT NULL,
    drift BOOLEAN NOT NULL,
    confirmed VARCHAR[] NOT NULL,
    reason VARCHAR NOT NULL,
    champion_version VARCHAR,         -- the version scored: the champion before the first update on the window
    info VARCHAR,                     -- JSON: sizes, raw rates, seconds per part
    dagster_run_id VARCHAR,
    profiled_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
ALTER TABLE monitor.window_profile ADD COLUMN IF NOT EXISTS emerging_z DOUBLE;  -- quality.drift emerging terms
ALTER TABLE monitor.window_profile ADD COLUMN IF NOT EXISTS emerging_z_p DOUBLE;
ALTER TABLE monitor.window_profile ADD COLUMN IF NOT EXISTS emerging_z_threshold DOUBLE;
ALTER TABLE monitor.window_profile ADD COLUMN IF NOT EXISTS emerging_terms VARCHAR;  -- JSON, PII-redacted terms
CREATE TABLE IF NOT EXISTS train.approvals (  -- [gate] require_approval: challengers held for a person (orchestration.pipeline.approval)
    model_version VARCHAR PRIMARY KEY,
    status VARCHAR NOT NULL,          -- pending | promoted | rejected
    champion_before VARCHAR,          -- the champion when the challenger was held
    requested_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    dagster_run_id VARCHAR,
    decided_by VARCHAR,
    reason VARCHAR,
    decided_at TIMESTAMPTZ
);
CREATE TABLE IF NOT EXISTS train.meta_rewards (  -- [train] recipe = "meta": one row per rewarded update (orchestration.store.meta)
    bucket VARCHAR NOT NULL,          -- drift-level context (training.meta.drift_bucket)
    arm VARCHAR NOT NULL,             -- recipe of the grid (training.meta.RecipeArm.name)
    reward DOUBLE NOT NULL,           -- prequential gain, bits/byte per 1e6 training tokens
    model_version VARCHAR,            -- the update it rewards
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
