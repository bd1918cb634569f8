-- A key the gateway passed over for the operator's credentials is shown as failing, with why,
-- until a request succeeds with it (SPEC §8).
ALTER TABLE ai_provider_keys ADD COLUMN last_error TEXT;
ALTER TABLE ai_provider_keys ADD COLUMN failing_since TEXT;
