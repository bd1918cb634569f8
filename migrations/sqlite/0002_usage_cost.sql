-- Cost as the upstream reports it, and whether the caller's own key was used.
ALTER TABLE usage_events ADD COLUMN cost REAL;
ALTER TABLE usage_events ADD COLUMN is_byok INTEGER;
