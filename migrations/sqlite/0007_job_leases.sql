-- A running job's owner (worker instance) and lease: renewed while it runs; a
-- job whose lease expired may be claimed by another worker (its first owner is
-- presumed dead), and a late owner can no longer record an outcome.
ALTER TABLE jobs ADD COLUMN lease_owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_expires_at INTEGER;
