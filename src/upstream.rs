//! The upstream client: one pooled hyper-util client (HTTP/1.1 and HTTP/2, rustls for
//! https), connect and first-byte timeouts from config. `send` answers the upstream's response
//! or an error that says which failure happened, so the edge can pick 502 or 504.

pub mod catalog;
pub mod direct;
pub mod gateway;
pub mod headers;

use crate::config::UpstreamConfig;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No response started within the first-byte timeout.
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// Connection refused, reset or closed before response headers.
    #[error("upstream unavailable: {0}")]
    Unavailable(String),
}

impl Error {
    /// Label for `byok_upstream_errors_total{kind}`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Timeout(_) => "timeout",
            Error::Unavailable(_) => "connect",
        }
    }
}

#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    pub first_byte_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Upstream {
    pub fn new(config: &UpstreamConfig) -> Upstream {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_nodelay(true);
        http.set_keepalive(Some(Duration::from_secs(60)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .build(https);
        Upstream {
            client,
            first_byte_timeout: config.first_byte_timeout,
            idle_timeout: config.idle_timeout,
        }
    }

    /// Sends `req`, waiting at most the first-byte timeout for the response head.
    ///
    /// # Errors
    /// `Timeout` or `Unavailable`; the detail is for logs, not for clients.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Result<Response<Incoming>, Error> {
        self.send_within(req, self.first_byte_timeout).await
    }

    /// Like [`Upstream::send`] with an explicit timeout.
    ///
    /// # Errors
    /// `Timeout` or `Unavailable`.
    pub async fn send_within(
        &self,
        req: Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, Error> {
        match tokio::time::timeout(timeout, self.client.request(req)).await {
            Err(_) => Err(Error::Timeout(timeout)),
            Ok(Err(e)) => {
                let mut detail = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    detail.push_str(": ");
                    detail.push_str(&s.to_string());
                    source = s.source();
                }
                Err(Error::Unavailable(detail))
            }
            Ok(Ok(resp)) => Ok(resp),
        }
    }
}
