-- Identity (issue #12): web sign-in through OIDC, server-side sessions, scoped app tokens.
-- Users signed in through OIDC carry their issuer and subject (unique together); is_admin
-- comes from auth.oidc.admin_emails at each sign-in.
ALTER TABLE users ADD COLUMN IF NOT EXISTS oidc_issuer TEXT;
ALTER TABLE users ADD COLUMN IF NOT EXISTS oidc_subject TEXT;
ALTER TABLE users ADD COLUMN IF NOT EXISTS is_admin BOOLEAN NOT NULL DEFAULT false;
CREATE UNIQUE INDEX IF NOT EXISTS users_oidc ON users(oidc_issuer, oidc_subject);

-- Token scopes: NULL = the user's full rights.
ALTER TABLE app_tokens ADD COLUMN IF NOT EXISTS allowed_models TEXT[];
ALTER TABLE app_tokens ADD COLUMN IF NOT EXISTS allowed_routes TEXT[];
ALTER TABLE app_tokens ADD COLUMN IF NOT EXISTS requests_per_minute INTEGER;

-- Web sessions: only the SHA-256 of the cookie value is stored.
CREATE TABLE IF NOT EXISTS sessions (
    id_hash      BYTEA PRIMARY KEY,
    user_id      UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at   TIMESTAMPTZ NOT NULL,
    last_seen_at TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL,
    user_agent   TEXT
);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions(user_id);
