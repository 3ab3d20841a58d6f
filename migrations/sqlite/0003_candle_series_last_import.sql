-- When an import job last finished for a series (ms since the epoch), for listings.
ALTER TABLE candle_series ADD COLUMN last_import_at INTEGER;
