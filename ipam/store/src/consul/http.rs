//! A minimal HTTP/1.1 client for Consul's API: bounded time per call, and fail-over to the next
//! agent only when a connection could not be made (so a write is never sent twice).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::tls;
use crate::kv::{StoreError, StoreOptions, StoreResult};

pub const BACKEND: &str = "consul";

/// Environment variable holding the ACL token, as with Consul's own tools.
pub const TOKEN_ENV: &str = "CONSUL_HTTP_TOKEN";

pub struct Http {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// `https` with `--store-ca`, else `http`.
    scheme: &'static str,
    endpoints: Vec<String>,
    /// Index of the endpoint that answered last; tried first.
    preferred: AtomicUsize,
    pub timeout: Duration,
    connect_timeout: Duration,
    token: Option<String>,
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// `X-Consul-Index`, present on reads.
    pub index: Option<u64>,
    pub body: Bytes,
}

impl Http {
    /// The ACL token is `--store-token-file`'s, else `CONSUL_HTTP_TOKEN`'s; TLS with `--store-ca`.
    pub fn new(endpoints: Vec<String>, options: &StoreOptions) -> StoreResult<Self> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(options.connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(false);
        let (tls_config, scheme) = match &options.credentials.tls {
            Some(material) => {
                let config = tls::client_config(material).map_err(|detail| StoreError::Tls {
                    backend: BACKEND,
                    endpoints: endpoints.join(","),
                    detail,
                })?;
                (config, "https")
            }
            // Never used for http:// URIs; the builder wants a configuration all the same.
            None => (tls::client_config_without_roots(), "http"),
        };
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
        let token =
            options.credentials.token.clone().or_else(|| std::env::var(TOKEN_ENV).ok()).filter(|t| !t.is_empty());
        Ok(Self {
            client,
            scheme,
            endpoints,
            preferred: AtomicUsize::new(0),
            timeout: options.request_timeout,
            connect_timeout: options.connect_timeout,
            token,
        })
    }

    pub fn endpoints(&self) -> String {
        self.endpoints.join(",")
    }

    pub fn unavailable(&self, detail: impl Into<String>) -> StoreError {
        StoreError::Unavailable { backend: BACKEND, endpoints: self.endpoints(), detail: detail.into() }
    }

    /// Consul answers 403 to a request without a token, with an unknown one, or with one whose
    /// policy does not cover the keys: none of which a retry mends.
    fn denied(&self, endpoint: &str, body: &[u8]) -> StoreError {
        let token = match &self.token {
            Some(_) => "the ACL token given (--store-token-file or CONSUL_HTTP_TOKEN) was refused",
            None => "no ACL token was given (--store-token-file or CONSUL_HTTP_TOKEN)",
        };
        let detail = format!("{endpoint} answered HTTP 403 {:?}: {token}", String::from_utf8_lossy(body).trim());
        StoreError::Auth { backend: BACKEND, endpoints: self.endpoints(), detail }
    }

    /// Whether this client speaks plain HTTP (no `--store-ca`).
    pub fn plain(&self) -> bool {
        self.scheme == "http"
    }

    /// Whether an agent answers in TLS.
    pub async fn speaks_tls(&self) -> bool {
        crate::tls_sniff::any_speaks_tls(&self.endpoints, self.connect_timeout).await
    }

    pub fn tls_refused(&self, detail: String) -> StoreError {
        let hint = if self.scheme == "https" {
            "check --store-ca (the CA that signed the agent's certificate) and, when the agent verifies \
             incoming connections, --store-cert/--store-key"
        } else {
            "the agent speaks TLS: give its CA with --store-ca (and a client certificate with \
             --store-cert/--store-key if it asks for one)"
        };
        StoreError::Tls { backend: BACKEND, endpoints: self.endpoints(), detail: format!("{detail}; {hint}") }
    }

    pub fn protocol(&self, detail: impl Into<String>) -> StoreError {
        StoreError::Protocol { backend: BACKEND, endpoints: self.endpoints(), detail: detail.into() }
    }

    /// Sends one request; `extra_time` lengthens the deadline for blocking queries.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
        extra_time: Duration,
    ) -> StoreResult<Response> {
        let deadline = tokio::time::Instant::now() + self.timeout + extra_time;
        let body = Bytes::from(body.unwrap_or_default());
        let first = self.preferred.load(Ordering::Relaxed);
        let mut last_error = String::new();
        for i in 0..self.endpoints.len() {
            let idx = (first + i) % self.endpoints.len();
            let endpoint = &self.endpoints[idx];
            let uri = format!("{}://{endpoint}{path_and_query}", self.scheme);
            let mut req = Request::builder().method(method.clone()).uri(&uri);
            if let Some(token) = &self.token {
                req = req.header("X-Consul-Token", token);
            }
            let req = req.body(Full::new(body.clone())).map_err(|e| self.protocol(format!("building {uri}: {e}")))?;
            let attempt = async {
                let resp = self.client.request(req).await?;
                let status = resp.status().as_u16();
                let index = resp
                    .headers()
                    .get("X-Consul-Index")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                let body = resp.into_body().collect().await?.to_bytes();
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Response { status, index, body })
            };
            match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Ok(resp)) if resp.status == 403 => return Err(self.denied(endpoint, &resp.body)),
                Ok(Ok(resp))
                    if resp.status == 400 && String::from_utf8_lossy(&resp.body).contains(tls::PLAIN_TO_TLS) =>
                {
                    return Err(self.tls_refused(format!("{endpoint} answered a plain HTTP request with HTTP 400")));
                }
                Ok(Ok(resp)) => {
                    self.preferred.store(idx, Ordering::Relaxed);
                    return Ok(resp);
                }
                Ok(Err(e)) => {
                    let connect_failed =
                        e.downcast_ref::<hyper_util::client::legacy::Error>().is_some_and(|e| e.is_connect());
                    if tls::is_tls_failure(&*e) {
                        return Err(self.tls_refused(format!("{endpoint}: {}", error_chain(&*e))));
                    }
                    last_error = format!("{endpoint}: {}", error_chain(&*e));
                    if !connect_failed {
                        // The request may have reached Consul: sending it elsewhere could apply it twice.
                        return Err(self.unavailable(last_error));
                    }
                    tracing::debug!("consul endpoint {endpoint} unreachable: {last_error}");
                }
                Err(_) => {
                    let waited = self.timeout + extra_time;
                    return Err(self.unavailable(format!("{endpoint}: no answer within {} ms", waited.as_millis())));
                }
            }
        }
        Err(self.unavailable(last_error))
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
