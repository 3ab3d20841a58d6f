-- How many of a parent's children had ended when it last looked at them. A
-- parent that starts children as others end (a research pipeline's steps) is
-- woken as soon as one more has ended, not only once all have.
ALTER TABLE jobs ADD COLUMN children_seen INTEGER;
