//! Web sessions, the second way (after app tokens) to become a [`Caller`](super::Caller):
//! the `byok_session` cookie set by `/auth/callback`.
//!
//! - The cookie holds 256 random bits (43 URL-safe characters); the `sessions` table holds
//!   only their SHA-256, like app tokens. `HttpOnly`, `SameSite=Lax`, `Path=/`, and `Secure`
//!   when `public_base_url` is https.
//! - A session ends `auth.session_ttl` after sign-in, or after `auth.session_idle_timeout`
//!   without a request, whichever comes first; `last_seen_at` is written at most once per
//!   [`TOUCH_EVERY`], not on every request.
//! - The cache is keyed by the hash and dropped per user through the same invalidation path
//!   as tokens (`AppState::invalidate_user`, PostgreSQL NOTIFY, the SQLite watch), so a
//!   disabled user's sessions fail on the next request on every replica.
//! - CSRF: a session request that changes state (`POST`, `PATCH`, `PUT`, `DELETE`) must carry
//!   `x-byok-csrf` equal to [`csrf_for`] of its cookie (the page reads it from `GET /api/me`),
//!   and its `Origin`, when sent, must be the proxy's own ([`check_csrf`]).
//!
//! Time comes from a [`Clock`] that tests can move forward, so expiry is tested without
//! waiting.

use crate::store::{SessionRecord, Store};
use base64::Engine;
use chrono::{DateTime, Utc};
use dashmap::DashMap;
use http::{HeaderMap, Method};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// The session cookie's name.
pub const COOKIE: &str = "byok_session";
/// The CSRF header of state-changing session requests.
pub const CSRF_HEADER: &str = "x-byok-csrf";
/// Activity is written to the database at most this often per session.
pub const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// Cached sessions are re-read after this (backstop; changes invalidate at once).
const TTL: Duration = Duration::from_secs(30);

/// Wall-clock time for sessions, with an offset tests can advance.
#[derive(Debug, Default)]
pub struct Clock {
    offset_ms: AtomicI64,
}

impl Clock {
    pub fn now(&self) -> DateTime<Utc> {
        crate::store::now() + chrono::Duration::milliseconds(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Moves this clock forward (tests).
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX / 2);
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
    }
}

/// A new session cookie value: 256 random bits, base64url without padding.
pub fn new_cookie_value() -> crate::secret::Secret<String> {
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let v = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    zeroize::Zeroize::zeroize(&mut raw);
    crate::secret::Secret::new(v)
}

/// SHA-256 of a cookie value, the only form stored.
pub fn hash_cookie(value: &str) -> [u8; 32] {
    Sha256::digest(value.as_bytes()).into()
}

/// The CSRF value of a session: derived from the cookie (which the page's script cannot
/// read), so it needs no storage and differs per session.
pub fn csrf_for(cookie_value: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"byok-csrf\0");
    h.update(cookie_value.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h.finalize())
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k.trim() == name).then(|| v.trim())
        })
}

/// Whether a cookie value has the shape of a session id (no hash, no lookup otherwise).
pub fn looks_like_session(value: &str) -> bool {
    value.len() == 43
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A `Set-Cookie` value. `max_age: None` deletes the cookie.
pub fn set_cookie(name: &str, value: &str, max_age: Option<Duration>, secure: bool) -> String {
    let age = max_age.map_or(0, |d| d.as_secs());
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={age}");
    if secure {
        c.push_str("; Secure");
    }
    c
}

/// Whether a method changes state (and so needs the CSRF header with a session).
pub fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The CSRF check of a session request that changes state: the header equals the session's
/// value (constant time), and `Origin`, when sent, is the proxy's own — `public_base_url`'s
/// origin or the request's `Host`.
pub fn check_csrf(headers: &HeaderMap, csrf: &str, public_origin: &str) -> bool {
    let header_ok = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.as_bytes().ct_eq(csrf.as_bytes()).into());
    let origin_ok = match headers.get(http::header::ORIGIN).map(|v| v.to_str()) {
        None => true,
        Some(Err(_)) => false,
        Some(Ok(origin)) => {
            let host = headers
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok());
            origin.eq_ignore_ascii_case(public_origin)
                || host.is_some_and(|h| {
                    origin
                        .split_once("://")
                        .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(h))
                })
        }
    };
    header_ok && origin_ok
}

/// `scheme://host[:port]` of a URL.
pub fn origin_of(url: &str) -> String {
    match url.parse::<http::Uri>() {
        Ok(u) => match (u.scheme_str(), u.authority()) {
            (Some(s), Some(a)) => format!("{s}://{a}"),
            _ => url.trim_end_matches('/').to_string(),
        },
        Err(_) => url.trim_end_matches('/').to_string(),
    }
}

/// What a session lookup found.
#[derive(Debug, Clone)]
pub enum SessionResult {
    Valid(Arc<SessionRecord>),
    /// Past its absolute or idle end (the row is deleted).
    Expired(Uuid),
    Disabled(Uuid),
    Unknown,
}

struct Entry {
    record: Arc<SessionRecord>,
    at: Instant,
    /// Last activity known to this replica (written to the database every [`TOUCH_EVERY`]).
    last_seen: Mutex<DateTime<Utc>>,
}

/// Session hash -> session and user, with expiry.
pub struct Sessions {
    map: DashMap<[u8; 32], Entry>,
    pub clock: Clock,
    pub ttl: Duration,
    pub idle_timeout: Duration,
}

impl Sessions {
    pub fn new(ttl: Duration, idle_timeout: Duration) -> Sessions {
        Sessions {
            map: DashMap::new(),
            clock: Clock::default(),
            ttl,
            idle_timeout,
        }
    }

    /// Resolves a session cookie value.
    ///
    /// # Errors
    /// The store failed on a cache miss.
    pub async fn authenticate(
        &self,
        store: &Store,
        value: &str,
    ) -> Result<SessionResult, crate::store::Error> {
        if !looks_like_session(value) {
            return Ok(SessionResult::Unknown);
        }
        let hash = hash_cookie(value);
        let cached = self.map.get(&hash).and_then(|e| {
            let last = e.last_seen.lock().map(|l| *l).ok()?;
            (e.at.elapsed() < TTL).then(|| (e.record.clone(), last))
        });
        let (record, last_seen) = match cached {
            Some(hit) => hit,
            None => match store.session_by_hash(&hash).await? {
                Some(r) => {
                    let r = Arc::new(r);
                    let last = r.session.last_seen_at;
                    self.map.insert(
                        hash,
                        Entry {
                            record: r.clone(),
                            at: Instant::now(),
                            last_seen: Mutex::new(last),
                        },
                    );
                    (r, last)
                }
                None => {
                    self.map.remove(&hash);
                    return Ok(SessionResult::Unknown);
                }
            },
        };
        let now = self.clock.now();
        let idle = chrono::Duration::from_std(self.idle_timeout).unwrap_or(chrono::Duration::MAX);
        let user = record.user.id;
        if now >= record.session.expires_at || now - last_seen >= idle || record.user.disabled {
            self.map.remove(&hash);
            let reason = if record.user.disabled {
                "user_disabled"
            } else {
                "expired"
            };
            let audit = crate::store::AuditEntry {
                actor_user_id: Some(user),
                action: "session.ended",
                target: Some(crate::store::user_target(user)),
                detail: serde_json::json!({ "reason": reason }),
                request_id: None,
                remote_addr: None,
            };
            if let Err(e) = store.delete_session(&hash, Some(audit)).await {
                tracing::warn!(error = %e, "could not delete an ended session");
            }
            return Ok(if record.user.disabled {
                SessionResult::Disabled(user)
            } else {
                SessionResult::Expired(user)
            });
        }
        let touch = chrono::Duration::from_std(TOUCH_EVERY.min(self.idle_timeout / 4))
            .unwrap_or(chrono::Duration::MAX);
        if now - last_seen >= touch {
            if let Some(e) = self.map.get(&hash) {
                if let Ok(mut l) = e.last_seen.lock() {
                    *l = now;
                }
            }
            if let Err(e) = store.touch_session(&hash, now).await {
                tracing::warn!(error = %e, "could not record session activity");
            }
        }
        Ok(SessionResult::Valid(record))
    }

    /// Forgets a session (after logout).
    pub fn forget(&self, hash: &[u8; 32]) {
        self.map.remove(hash);
    }

    /// Drops every cached session of `user_id`.
    pub fn invalidate_user(&self, user_id: Uuid) {
        self.map.retain(|_, e| e.record.user.id != user_id);
    }

    pub fn clear(&self) {
        self.map.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_and_csrf() {
        let v = new_cookie_value();
        assert!(looks_like_session(v.expose()));
        assert!(!looks_like_session("short"));
        let mut h = HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            format!("a=b; {COOKIE}={}; c=d", v.expose())
                .parse()
                .unwrap(),
        );
        assert_eq!(cookie(&h, COOKIE), Some(v.expose().as_str()));
        assert_eq!(cookie(&h, "zzz"), None);
        let csrf = csrf_for(v.expose());
        assert_ne!(csrf, csrf_for(new_cookie_value().expose()));
        let origin = "https://proxy.example.com";
        assert!(!check_csrf(&h, &csrf, origin));
        h.insert(CSRF_HEADER, csrf.parse().unwrap());
        assert!(check_csrf(&h, &csrf, origin));
        h.insert(
            http::header::ORIGIN,
            "https://evil.example".parse().unwrap(),
        );
        assert!(!check_csrf(&h, &csrf, origin));
        h.insert(http::header::ORIGIN, origin.parse().unwrap());
        assert!(check_csrf(&h, &csrf, origin));
        h.insert(http::header::HOST, "127.0.0.1:1234".parse().unwrap());
        h.insert(
            http::header::ORIGIN,
            "http://127.0.0.1:1234".parse().unwrap(),
        );
        assert!(check_csrf(&h, &csrf, origin));
        h.insert(CSRF_HEADER, "wrong".parse().unwrap());
        assert!(!check_csrf(&h, &csrf, origin));
    }

    #[test]
    fn set_cookie_attributes() {
        let c = set_cookie(COOKIE, "v", Some(Duration::from_secs(60)), true);
        assert_eq!(
            c,
            "byok_session=v; Path=/; HttpOnly; SameSite=Lax; Max-Age=60; Secure"
        );
        assert!(!set_cookie(COOKIE, "", None, false).contains("Secure"));
        assert_eq!(
            origin_of("https://a.example:8443/x/"),
            "https://a.example:8443"
        );
    }

    #[test]
    fn clock_advances() {
        let c = Clock::default();
        let a = c.now();
        c.advance(Duration::from_secs(3600));
        assert!(c.now() - a >= chrono::Duration::seconds(3600));
    }
}
