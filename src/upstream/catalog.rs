//! The upstream model catalog (`GET {gateway}/models`, fetched without auth), cached for
//! `models.catalog_ttl`. One refresh at a time; if a refresh fails, the stale copy is served.
//! `/v1/models` filters it to the providers the caller holds an active key for.

use crate::upstream::Upstream;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Largest catalog accepted from upstream.
const MAX_CATALOG_BYTES: usize = 32 * 1024 * 1024;

pub struct Catalog {
    url: String,
    ttl: Duration,
    cached: RwLock<Option<(Instant, Arc<Vec<Value>>)>>,
    refresh: tokio::sync::Mutex<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Upstream(#[from] crate::upstream::Error),
    #[error("catalog answer: {0}")]
    Bad(String),
}

impl Catalog {
    pub fn new(gateway_base_url: &str, ttl: Duration) -> Catalog {
        Catalog {
            url: format!("{gateway_base_url}/models"),
            ttl,
            cached: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    fn current(&self) -> Option<(Instant, Arc<Vec<Value>>)> {
        self.cached.read().ok().and_then(|c| c.clone())
    }

    /// The catalog entries; fetched when missing or older than the TTL.
    ///
    /// # Errors
    /// The fetch failed and there is no earlier copy to serve.
    pub async fn entries(&self, upstream: &Upstream) -> Result<Arc<Vec<Value>>, Error> {
        if let Some((at, v)) = self.current() {
            if at.elapsed() < self.ttl {
                return Ok(v);
            }
        }
        let _guard = self.refresh.lock().await;
        // Someone else may have refreshed while we waited.
        let stale = self.current();
        if let Some((at, v)) = &stale {
            if at.elapsed() < self.ttl {
                return Ok(v.clone());
            }
        }
        match self.fetch(upstream).await {
            Ok(list) => {
                let list = Arc::new(list);
                if let Ok(mut c) = self.cached.write() {
                    *c = Some((Instant::now(), list.clone()));
                }
                Ok(list)
            }
            Err(e) => match stale {
                Some((_, v)) => {
                    tracing::warn!(error = %e, "model catalog refresh failed; serving the stale copy");
                    Ok(v)
                }
                None => Err(e),
            },
        }
    }

    async fn fetch(&self, upstream: &Upstream) -> Result<Vec<Value>, Error> {
        let req = Request::get(&self.url)
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|e| Error::Bad(e.to_string()))?;
        let resp = upstream.send(req).await?;
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_CATALOG_BYTES)
            .collect()
            .await
            .map_err(|e| Error::Bad(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            return Err(Error::Bad(format!("status {status}")));
        }
        let v: Value = serde_json::from_slice(&body).map_err(|e| Error::Bad(e.to_string()))?;
        match v.get("data").and_then(Value::as_array) {
            Some(list) => Ok(list.clone()),
            None => Err(Error::Bad("no `data` array".into())),
        }
    }
}

/// The creator of a model id: the text before the first `/`.
pub fn creator(id: &str) -> &str {
    id.split_once('/').map_or(id, |(c, _)| c)
}
