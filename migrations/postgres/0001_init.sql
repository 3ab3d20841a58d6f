-- The Postgres flavour of the store: the same tables, columns and meaning as
-- migrations/sqlite (0001-0007), in one step. Integers are BIGINT and reals
-- DOUBLE PRECISION so both backends decode into the same Rust types.
-- Times are milliseconds since the Unix epoch (UTC).
CREATE TABLE jobs (
    id               TEXT             PRIMARY KEY,  -- ULID, created at submit
    kind             TEXT             NOT NULL,
    status           TEXT             NOT NULL,     -- queued | running | succeeded | failed | cancelled
    params           TEXT             NOT NULL,     -- JSON: the validated plan the worker runs
    progress         DOUBLE PRECISION NOT NULL DEFAULT 0,
    stage            TEXT,
    attempts         BIGINT           NOT NULL DEFAULT 0,
    idempotency_key  TEXT             UNIQUE,
    cancel_requested BIGINT           NOT NULL DEFAULT 0,
    error            TEXT,                          -- JSON {code, message, details}
    summary          TEXT,                          -- JSON
    created_at       BIGINT           NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT,
    updated_at       BIGINT           NOT NULL,
    lease_owner      TEXT,                          -- worker instance holding a running job
    lease_expires_at BIGINT
);
CREATE INDEX jobs_by_kind_status ON jobs (kind, status, id);
CREATE INDEX jobs_by_status ON jobs (status, id);

CREATE TABLE backtest_results (
    job_id        TEXT   PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    metrics       TEXT   NOT NULL,                  -- JSON; NaN and +/-inf stored as null
    trades        TEXT,
    equity_curve  TEXT,
    jesse_version TEXT   NOT NULL,
    strategies    TEXT   NOT NULL,
    candles       TEXT   NOT NULL,
    timings       TEXT   NOT NULL,
    created_at    BIGINT NOT NULL
);

-- 1m rows in Jesse's own shape; the primary key orders a series by time.
CREATE TABLE candles (
    exchange  TEXT             NOT NULL,
    symbol    TEXT             NOT NULL,
    timeframe TEXT             NOT NULL DEFAULT '1m',
    timestamp BIGINT           NOT NULL,
    open      DOUBLE PRECISION NOT NULL,
    close     DOUBLE PRECISION NOT NULL,
    high      DOUBLE PRECISION NOT NULL,
    low       DOUBLE PRECISION NOT NULL,
    volume    DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (exchange, symbol, timeframe, timestamp)
);

CREATE TABLE candle_series (
    exchange       TEXT   NOT NULL,
    symbol         TEXT   NOT NULL,
    timeframe      TEXT   NOT NULL DEFAULT '1m',
    first_ts       BIGINT NOT NULL,
    last_ts        BIGINT NOT NULL,
    row_count      BIGINT NOT NULL,
    version        BIGINT NOT NULL DEFAULT 1,
    updated_at     BIGINT NOT NULL,
    last_import_at BIGINT,
    gap_count      BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (exchange, symbol, timeframe)
);

CREATE TABLE strategy_validations (
    job_id     TEXT   PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    strategy   TEXT   NOT NULL,
    sha256     TEXT   NOT NULL,
    valid      BIGINT NOT NULL,
    report     TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX strategy_validations_by_source ON strategy_validations (strategy, sha256, created_at);

CREATE TABLE schedules (
    exchange      TEXT   NOT NULL,
    symbol        TEXT   NOT NULL,
    cron          TEXT   NOT NULL,
    start_date    TEXT,
    created_at    BIGINT NOT NULL,
    last_fired_at BIGINT,
    PRIMARY KEY (exchange, symbol)
);

CREATE TABLE leases (
    name       TEXT   PRIMARY KEY,
    holder     TEXT   NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE TABLE counters (
    name  TEXT   PRIMARY KEY,
    value BIGINT NOT NULL
);
