-- byok-proxy schema v1 (PostgreSQL).
CREATE TABLE IF NOT EXISTS users (
    id                  UUID PRIMARY KEY,
    name                TEXT NOT NULL UNIQUE,
    email               TEXT,
    disabled            BOOLEAN NOT NULL DEFAULT FALSE,
    requests_per_minute INTEGER,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS app_tokens (
    id           UUID PRIMARY KEY,
    user_id      UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT,
    prefix       TEXT NOT NULL,
    token_hash   BYTEA NOT NULL UNIQUE,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at   TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS app_tokens_user ON app_tokens(user_id);

CREATE TABLE IF NOT EXISTS ai_provider_keys (
    id            UUID PRIMARY KEY,
    user_id       UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    provider      TEXT NOT NULL,
    encrypted_key BYTEA NOT NULL,
    iv            BYTEA NOT NULL,
    key_version   BIGINT NOT NULL,
    label         TEXT,
    is_active     BOOLEAN NOT NULL DEFAULT TRUE,
    masked_hint   TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_used_at  TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS ai_provider_keys_user ON ai_provider_keys(user_id, provider);
CREATE INDEX IF NOT EXISTS ai_provider_keys_version ON ai_provider_keys(key_version);

CREATE TABLE IF NOT EXISTS usage_events (
    request_id        TEXT NOT NULL,
    user_id           UUID NOT NULL,
    provider          TEXT NOT NULL,
    model             TEXT NOT NULL,
    prompt_tokens     BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    status            TEXT NOT NULL,
    latency_ms        BIGINT NOT NULL DEFAULT 0,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS usage_events_user_time ON usage_events(user_id, created_at);

CREATE TABLE IF NOT EXISTS audit_log (
    id            BIGSERIAL PRIMARY KEY,
    at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor_user_id UUID,
    action        TEXT NOT NULL,
    target        TEXT,
    detail        JSONB NOT NULL DEFAULT '{}'::jsonb,
    request_id    TEXT,
    remote_addr   TEXT
);
CREATE INDEX IF NOT EXISTS audit_log_actor ON audit_log(actor_user_id, id);
CREATE INDEX IF NOT EXISTS audit_log_target ON audit_log(target, id);
