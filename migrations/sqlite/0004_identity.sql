-- Identity (issue #12): web sign-in through OIDC, server-side sessions, scoped app tokens.
-- Users signed in through OIDC carry their issuer and subject (unique together); is_admin
-- comes from auth.oidc.admin_emails at each sign-in.
ALTER TABLE users ADD COLUMN oidc_issuer TEXT;
ALTER TABLE users ADD COLUMN oidc_subject TEXT;
ALTER TABLE users ADD COLUMN is_admin INTEGER NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX IF NOT EXISTS users_oidc ON users(oidc_issuer, oidc_subject);

-- Token scopes: NULL = the user's full rights. The lists are JSON arrays of text.
ALTER TABLE app_tokens ADD COLUMN allowed_models TEXT;
ALTER TABLE app_tokens ADD COLUMN allowed_routes TEXT;
ALTER TABLE app_tokens ADD COLUMN requests_per_minute INTEGER;

-- Web sessions: only the SHA-256 of the cookie value is stored.
CREATE TABLE IF NOT EXISTS sessions (
    id_hash      BLOB PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at   TEXT NOT NULL,
    last_seen_at TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    user_agent   TEXT
);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions(user_id);
