-- Deep validation reports of strategy sources (import, instantiate, hyperparameter
-- schema, smoke backtest in a runner), keyed by the exact source hash.
CREATE TABLE strategy_validations (
    job_id     TEXT    PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    strategy   TEXT    NOT NULL,
    sha256     TEXT    NOT NULL,
    valid      INTEGER NOT NULL,
    report     TEXT    NOT NULL,   -- JSON {valid, errors: [{line, column, message}], warnings, hyperparameters}
    created_at INTEGER NOT NULL
);
CREATE INDEX strategy_validations_by_source ON strategy_validations (strategy, sha256, created_at);
