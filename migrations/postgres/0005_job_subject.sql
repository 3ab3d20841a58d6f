-- What a job is about, for listings: its subject (strategy, exchange, symbol,
-- timeframe, range, hyperparameters as JSON, derived from its plan at insert so
-- a listing never reads plans) and the tags given at submit (a JSON list).
ALTER TABLE jobs ADD COLUMN subject TEXT;
ALTER TABLE jobs ADD COLUMN tags TEXT;

-- The values listings filter on: one row per (name, value) of a job, name
-- 'strategy', 'symbol' or 'tag'. A table rather than columns because a job can
-- have several of each (a multi-route backtest, a batch over symbols, tags).
CREATE TABLE job_labels (
    name   TEXT NOT NULL,
    value  TEXT NOT NULL,
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    PRIMARY KEY (name, value, job_id)
);
CREATE INDEX job_labels_by_job ON job_labels (job_id);
