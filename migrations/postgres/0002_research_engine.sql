-- Research job engine: parent and child jobs, one result model for every kind,
-- and the fleet's live workers. Same meaning as migrations/sqlite/0008.
ALTER TABLE jobs ADD COLUMN parent_id TEXT;
ALTER TABLE jobs ADD COLUMN child_index BIGINT;
ALTER TABLE jobs ADD COLUMN released BIGINT NOT NULL DEFAULT 1;
ALTER TABLE jobs ADD COLUMN waiting BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN child_cap BIGINT;
CREATE INDEX jobs_by_parent ON jobs (parent_id, status, id);
CREATE INDEX jobs_waiting ON jobs (waiting, updated_at);

CREATE TABLE job_results (
    job_id     TEXT   PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    kind       TEXT   NOT NULL,
    body       TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE job_result_rows (
    job_id TEXT   NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    part   TEXT   NOT NULL,
    seq    BIGINT NOT NULL,
    body   TEXT   NOT NULL,
    PRIMARY KEY (job_id, part, seq)
);

INSERT INTO job_results (job_id, kind, body, created_at)
SELECT r.job_id, 'backtest',
       json_build_object('metrics', r.metrics::json,
                         'equity_curve', r.equity_curve::json,
                         'provenance', json_build_object('jesse_version', r.jesse_version,
                                                         'strategies', r.strategies::json,
                                                         'candles', r.candles::json,
                                                         'params', j.params::json),
                         'gaps', j.params::json -> 'gap_report',
                         'timings', r.timings::json)::text,
       r.created_at
FROM backtest_results r JOIN jobs j ON j.id = r.job_id;
INSERT INTO job_result_rows (job_id, part, seq, body)
SELECT r.job_id, 'trades', t.ordinality - 1, t.value::text
FROM backtest_results r, json_array_elements(COALESCE(r.trades, '[]')::json) WITH ORDINALITY AS t(value, ordinality);
DROP TABLE backtest_results;

INSERT INTO job_results (job_id, kind, body, created_at)
SELECT job_id, 'strategy_validation', report, created_at FROM strategy_validations;
INSERT INTO job_results (job_id, kind, body, created_at)
SELECT id, kind, summary, COALESCE(finished_at, updated_at) FROM jobs
WHERE kind = 'candle_import' AND status = 'succeeded' AND summary IS NOT NULL;

CREATE TABLE strategy_sources (
    sha256 TEXT PRIMARY KEY,
    name   TEXT NOT NULL,
    source TEXT NOT NULL
);

CREATE TABLE workers (
    id         TEXT   PRIMARY KEY,
    runners    BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
