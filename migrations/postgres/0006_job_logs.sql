-- A job's log: what its strategy printed (stdout, stderr) and logged with
-- `self.log(...)` (info, error), in order, capped per job by the worker
-- (10,000 lines / 1 MiB, then one `system` line saying it was truncated).
-- `seq` numbers the lines of a job from 0 across its attempts; `simulated_ms` is
-- Jesse's clock when the line was written (NULL outside the simulation).
CREATE TABLE job_logs (
    job_id       TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq          BIGINT  NOT NULL,
    attempt      BIGINT  NOT NULL,
    stream       TEXT    NOT NULL,
    line         TEXT    NOT NULL,
    simulated_ms BIGINT,
    logged_at    BIGINT  NOT NULL,
    PRIMARY KEY (job_id, seq)
);
