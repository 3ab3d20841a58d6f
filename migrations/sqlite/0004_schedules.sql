-- Series kept current by scheduled imports, and leases that elect one scheduler
-- among several API instances.
CREATE TABLE schedules (
    exchange      TEXT    NOT NULL,
    symbol        TEXT    NOT NULL,
    cron          TEXT    NOT NULL,   -- 6 fields with seconds, UTC (e.g. "0 30 2 * * *")
    start_date    TEXT,               -- first day to import while the series is empty
    created_at    INTEGER NOT NULL,
    last_fired_at INTEGER,            -- the scheduled time of the last tick that enqueued
    PRIMARY KEY (exchange, symbol)
);

CREATE TABLE leases (
    name       TEXT    PRIMARY KEY,
    holder     TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
);
