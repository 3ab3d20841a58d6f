-- A parent's release window: a child is released only once every child at
-- least `child_window` places before it has ended (NULL: no window). Studies
-- whose sampler learns from finished trials use it, so trial k is always drawn
-- knowing exactly trials 0..k-window, however many workers run them.
ALTER TABLE jobs ADD COLUMN child_window BIGINT;

-- A study's best objective value so far and the child that reached it, raised
-- atomically as trials end (progress shows it while the study runs).
ALTER TABLE jobs ADD COLUMN best_value DOUBLE PRECISION;
ALTER TABLE jobs ADD COLUMN best_child BIGINT;
