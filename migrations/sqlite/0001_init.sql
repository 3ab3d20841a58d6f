-- Jobs of every kind share one table and one status vocabulary:
-- queued | running | succeeded | failed | cancelled.
-- Times are milliseconds since the Unix epoch (UTC).
CREATE TABLE jobs (
    id               TEXT    PRIMARY KEY,          -- ULID, created at submit
    kind             TEXT    NOT NULL,
    status           TEXT    NOT NULL,
    params           TEXT    NOT NULL,             -- JSON: the validated plan the worker runs
    progress         REAL    NOT NULL DEFAULT 0,   -- 0..1
    stage            TEXT,                         -- human-readable step of a running job
    attempts         INTEGER NOT NULL DEFAULT 0,   -- runner attempts started
    idempotency_key  TEXT    UNIQUE,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    error            TEXT,                         -- JSON {code, message, details}
    summary          TEXT,                         -- JSON: headline numbers of a finished job
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX jobs_by_kind_status ON jobs (kind, status, id);
CREATE INDEX jobs_by_status ON jobs (status, id);

CREATE TABLE backtest_results (
    job_id           TEXT    PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    metrics          TEXT    NOT NULL,             -- JSON; NaN and +/-inf stored as null
    trades           TEXT,                         -- JSON array
    equity_curve     TEXT,                         -- JSON
    jesse_version    TEXT    NOT NULL,
    strategies       TEXT    NOT NULL,             -- JSON [{name, sha256}]
    candles          TEXT    NOT NULL,             -- JSON fingerprint per series {rows, first, last}
    timings          TEXT    NOT NULL,             -- JSON breakdown in ms
    created_at       INTEGER NOT NULL
);

-- 1m rows in Jesse's own shape. WITHOUT ROWID keeps a series contiguous in
-- primary-key order, so loading a range is one sequential B-tree scan.
CREATE TABLE candles (
    exchange   TEXT    NOT NULL,
    symbol     TEXT    NOT NULL,
    timeframe  TEXT    NOT NULL DEFAULT '1m',
    timestamp  INTEGER NOT NULL,
    open       REAL    NOT NULL,
    close      REAL    NOT NULL,
    high       REAL    NOT NULL,
    low        REAL    NOT NULL,
    volume     REAL    NOT NULL,
    PRIMARY KEY (exchange, symbol, timeframe, timestamp)
) WITHOUT ROWID;

-- One row per stored series, maintained on every write so listings never scan candles.
CREATE TABLE candle_series (
    exchange   TEXT    NOT NULL,
    symbol     TEXT    NOT NULL,
    timeframe  TEXT    NOT NULL DEFAULT '1m',
    first_ts   INTEGER NOT NULL,
    last_ts    INTEGER NOT NULL,
    row_count  INTEGER NOT NULL,
    -- Bumped by every write to the series; caches of loaded ranges key on it.
    version    INTEGER NOT NULL DEFAULT 1,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (exchange, symbol, timeframe)
);
