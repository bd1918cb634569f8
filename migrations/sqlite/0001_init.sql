-- byok-proxy schema v1 (SQLite). UUIDs are TEXT, timestamps RFC 3339 TEXT in UTC (they sort).
CREATE TABLE IF NOT EXISTS users (
    id                  TEXT PRIMARY KEY,
    name                TEXT NOT NULL UNIQUE,
    email               TEXT,
    disabled            INTEGER NOT NULL DEFAULT 0,
    requests_per_minute INTEGER,
    created_at          TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS app_tokens (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT,
    prefix       TEXT NOT NULL,
    token_hash   BLOB NOT NULL UNIQUE,
    created_at   TEXT NOT NULL,
    expires_at   TEXT,
    last_used_at TEXT,
    revoked_at   TEXT
);
CREATE INDEX IF NOT EXISTS app_tokens_user ON app_tokens(user_id);

CREATE TABLE IF NOT EXISTS ai_provider_keys (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    provider      TEXT NOT NULL,
    encrypted_key BLOB NOT NULL,
    iv            BLOB NOT NULL,
    key_version   INTEGER NOT NULL,
    label         TEXT,
    is_active     INTEGER NOT NULL DEFAULT 1,
    masked_hint   TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    last_used_at  TEXT
);
CREATE INDEX IF NOT EXISTS ai_provider_keys_user ON ai_provider_keys(user_id, provider);
CREATE INDEX IF NOT EXISTS ai_provider_keys_version ON ai_provider_keys(key_version);

CREATE TABLE IF NOT EXISTS usage_events (
    request_id        TEXT NOT NULL,
    user_id           TEXT NOT NULL,
    provider          TEXT NOT NULL,
    model             TEXT NOT NULL,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    status            TEXT NOT NULL,
    latency_ms        INTEGER NOT NULL DEFAULT 0,
    created_at        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_events_user_time ON usage_events(user_id, created_at);

CREATE TABLE IF NOT EXISTS audit_log (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    at            TEXT NOT NULL,
    actor_user_id TEXT,
    action        TEXT NOT NULL,
    target        TEXT,
    detail        TEXT NOT NULL DEFAULT '{}',
    request_id    TEXT,
    remote_addr   TEXT
);
CREATE INDEX IF NOT EXISTS audit_log_actor ON audit_log(actor_user_id, id);
CREATE INDEX IF NOT EXISTS audit_log_target ON audit_log(target, id);
