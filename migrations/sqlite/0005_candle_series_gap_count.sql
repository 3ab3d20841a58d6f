-- Runs of missing minutes between a series' first and last row, refreshed after
-- every write request (CSV import, import job) so listings never scan candles.
ALTER TABLE candle_series ADD COLUMN gap_count INTEGER NOT NULL DEFAULT 0;
