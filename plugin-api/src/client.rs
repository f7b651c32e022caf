//! A small client for a plugin socket, speaking to it the way dockerd does: for tests, benchmarks
//! and tools that drive a driver without dockerd.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::UnixStream;

/// One keep-alive connection to a plugin socket.
pub struct PluginClient {
    path: PathBuf,
    sender: SendRequest<Full<Bytes>>,
}

/// A raw answer: HTTP status and body decoded as JSON (or as a string when it is not JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct RawReply {
    pub status: u16,
    pub body: Value,
}

impl RawReply {
    /// The `Err` text of an error answer.
    pub fn err(&self) -> Option<&str> {
        self.body.get("Err").and_then(Value::as_str)
    }
}

impl PluginClient {
    pub async fn connect(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let stream = UnixStream::connect(&path).await.with_context(|| format!("connecting to {}", path.display()))?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.context("HTTP handshake")?;
        tokio::spawn(connection);
        Ok(Self { path, sender })
    }

    /// Sends `body` as dockerd would (POST, no Content-Type) and returns whatever came back.
    pub async fn call_raw(&mut self, method: &str, body: impl Into<Bytes>) -> Result<RawReply> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("/{method}"))
            .header("Host", "plugin.moby.localhost")
            .header("Accept", "application/vnd.docker.plugins.v1.2+json")
            .body(Full::new(body.into()))?;
        self.sender.ready().await.with_context(|| format!("{} closed the connection", self.path.display()))?;
        let response = self.sender.send_request(request).await.with_context(|| format!("calling {method}"))?;
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await?.to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok(RawReply { status, body })
    }

    /// Calls `method` with a JSON value and returns the success body, or the plugin's `Err` as an error.
    pub async fn call(&mut self, method: &str, request: &Value) -> Result<Value> {
        let body = if request.is_null() { Bytes::new() } else { Bytes::from(serde_json::to_vec(request)?) };
        let reply = self.call_raw(method, body).await?;
        if reply.status == 200 {
            return Ok(reply.body);
        }
        Err(anyhow!(
            "{method}: HTTP {}: {}",
            reply.status,
            reply.err().map(str::to_string).unwrap_or_else(|| reply.body.to_string())
        ))
    }
}
