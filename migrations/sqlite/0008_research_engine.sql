-- Research job engine: parent and child jobs, one result model for every kind,
-- and the fleet's live workers (for filling its runners).

-- A child's parent; its position among the parent's children; whether its parent
-- has let it run yet (a parent keeps at most its in-flight cap of children queued
-- or running, so one large study cannot starve other jobs); and whether a parent
-- is waiting on its children (running, but holding no lease and no worker).
ALTER TABLE jobs ADD COLUMN parent_id TEXT;
ALTER TABLE jobs ADD COLUMN child_index INTEGER;
ALTER TABLE jobs ADD COLUMN released INTEGER NOT NULL DEFAULT 1;
ALTER TABLE jobs ADD COLUMN waiting INTEGER NOT NULL DEFAULT 0;
-- A parent's in-flight cap (NULL: the runners of the live fleet).
ALTER TABLE jobs ADD COLUMN child_cap INTEGER;
CREATE INDEX jobs_by_parent ON jobs (parent_id, status, id);
CREATE INDEX jobs_waiting ON jobs (waiting, updated_at);

-- Every kind's result: one JSON body, and its large parts (trades, leaderboard
-- rows...) as numbered rows so a page is read without parsing the whole set.
CREATE TABLE job_results (
    job_id     TEXT    PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    kind       TEXT    NOT NULL,
    body       TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE job_result_rows (
    job_id TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    part   TEXT    NOT NULL,
    seq    INTEGER NOT NULL,
    body   TEXT    NOT NULL,
    PRIMARY KEY (job_id, part, seq)
) WITHOUT ROWID;

-- Backtest results move over: the body keeps everything but the trades, which
-- become rows.
INSERT INTO job_results (job_id, kind, body, created_at)
SELECT r.job_id, 'backtest',
       json_object('metrics', json(r.metrics),
                   'equity_curve', json(r.equity_curve),
                   'provenance', json_object('jesse_version', r.jesse_version,
                                             'strategies', json(r.strategies),
                                             'candles', json(r.candles),
                                             'params', json(j.params)),
                   'gaps', json_extract(j.params, '$.gap_report'),
                   'timings', json(r.timings)),
       r.created_at
FROM backtest_results r JOIN jobs j ON j.id = r.job_id;
INSERT INTO job_result_rows (job_id, part, seq, body)
SELECT r.job_id, 'trades', t.key, t.value
FROM backtest_results r, json_each(COALESCE(r.trades, '[]')) t;
DROP TABLE backtest_results;

-- Deep validation reports and import reports become results too (the
-- validations table stays as the index of verdicts per source).
INSERT INTO job_results (job_id, kind, body, created_at)
SELECT job_id, 'strategy_validation', report, created_at FROM strategy_validations;
INSERT INTO job_results (job_id, kind, body, created_at)
SELECT id, kind, summary, COALESCE(finished_at, updated_at) FROM jobs
WHERE kind = 'candle_import' AND status = 'succeeded' AND summary IS NOT NULL;

-- Strategy sources pinned by parents, by content: ten thousand children of a
-- batch name their source by sha256 instead of carrying a copy each.
CREATE TABLE strategy_sources (
    sha256 TEXT PRIMARY KEY,
    name   TEXT NOT NULL,
    source TEXT NOT NULL
);

-- Live worker processes and their runners, renewed at each heartbeat.
CREATE TABLE workers (
    id         TEXT    PRIMARY KEY,
    runners    INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
