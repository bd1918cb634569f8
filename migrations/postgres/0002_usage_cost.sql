-- Cost as the upstream reports it, and whether the caller's own key was used.
ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS cost DOUBLE PRECISION;
ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS is_byok BOOLEAN;
