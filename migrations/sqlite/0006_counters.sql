-- Monotonic counters reported by processes that have no HTTP endpoint of their
-- own (e.g. runner restarts in workers), exported by the API's /metrics.
CREATE TABLE counters (
    name  TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
);
