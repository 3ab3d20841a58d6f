-- Where a series' candles came from: 'synthetic' (the demo seeder), 'csv'
-- (uploads), 'import' (Jesse's exchange drivers), 'mixed' (csv and import rows
-- in one series) or 'unknown' (stored before sources were recorded; the demo
-- seeder relabels its own series by comparing rows with its generator).
-- Synthetic rows never share a series with others: the first CSV upload or
-- import into a synthetic series deletes its rows first.
ALTER TABLE candle_series ADD COLUMN source TEXT NOT NULL DEFAULT 'unknown';
-- Runners a worker process has warm (`runners` is how many it starts): a
-- worker announces itself with 0 before its runners are up, for /ready.
ALTER TABLE workers ADD COLUMN ready INTEGER NOT NULL DEFAULT 0;
UPDATE workers SET ready = runners;
