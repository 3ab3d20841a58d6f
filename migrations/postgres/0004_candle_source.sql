-- Where a series' candles came from and how many runners each worker has warm.
-- Same meaning as migrations/sqlite/0010.
ALTER TABLE candle_series ADD COLUMN source TEXT NOT NULL DEFAULT 'unknown';
ALTER TABLE workers ADD COLUMN ready BIGINT NOT NULL DEFAULT 0;
UPDATE workers SET ready = runners;
