//! HTTP/1.1 GETs to dockerd over a unix socket or plain TCP, one connection per call, every call
//! bounded in time. Errors come back as text; the client decides what they mean.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

/// Where dockerd's API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Unix(PathBuf),
    /// `host:port`
    Tcp(String),
}

impl Target {
    /// `unix:///path`, `tcp://host:port` or `http://host:port`; `None` for anything else.
    pub(crate) fn parse(docker_host: &str) -> Option<Target> {
        if let Some(path) = docker_host.strip_prefix("unix://") {
            return path.starts_with('/').then(|| Target::Unix(PathBuf::from(path)));
        }
        let address = docker_host.strip_prefix("tcp://").or_else(|| docker_host.strip_prefix("http://"))?;
        let address = address.trim_end_matches('/');
        let has_port =
            address.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        (has_port && !address.contains('/')).then(|| Target::Tcp(address.to_string()))
    }

    fn host_header(&self) -> &str {
        match self {
            // dockerd ignores the host of a unix-socket request; HTTP/1.1 only needs one.
            Target::Unix(_) => "docker",
            Target::Tcp(address) => address,
        }
    }

    async fn connect(&self) -> Result<SendRequest<Empty<Bytes>>, String> {
        match self {
            Target::Unix(path) => {
                let stream =
                    UnixStream::connect(path).await.map_err(|e| format!("connecting to {}: {e}", path.display()))?;
                handshake(stream).await
            }
            Target::Tcp(address) => {
                let stream = TcpStream::connect(address).await.map_err(|e| format!("connecting to {address}: {e}"))?;
                handshake(stream).await
            }
        }
    }

    /// Sends `GET path` and returns the response with its body still to be read.
    async fn send(&self, path: &str) -> Result<Response<Incoming>, String> {
        let mut sender = self.connect().await?;
        let request = Request::get(path)
            .header(hyper::header::HOST, self.host_header())
            .header(hyper::header::USER_AGENT, concat!("netloom/", env!("CARGO_PKG_VERSION")))
            .body(Empty::new())
            .map_err(|e| format!("building GET {path}: {e}"))?;
        sender.send_request(request).await.map_err(|e| format!("GET {path}: {e}"))
    }

    /// `GET path`, status and whole body, within `limit`.
    pub(crate) async fn get(&self, path: &str, limit: Duration) -> Result<(u16, Bytes), String> {
        let call = async {
            let response = self.send(path).await?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.map_err(|e| format!("reading GET {path}: {e}"))?;
            Ok((status, body.to_bytes()))
        };
        tokio::time::timeout(limit, call)
            .await
            .unwrap_or_else(|_| Err(format!("GET {path}: no answer within {limit:?}")))
    }

    /// `GET path` for a streamed answer: only the status line and headers are bounded by `limit`.
    pub(crate) async fn stream(&self, path: &str, limit: Duration) -> Result<Response<Incoming>, String> {
        tokio::time::timeout(limit, self.send(path))
            .await
            .unwrap_or_else(|_| Err(format!("GET {path}: no answer within {limit:?}")))
    }
}

async fn handshake<S>(stream: S) -> Result<SendRequest<Empty<Bytes>>, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) =
        http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "Engine API connection ended with an error");
        }
    });
    Ok(sender)
}

/// A query-string value: everything but unreserved characters percent-encoded.
pub(crate) fn query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_parsed_or_refused() {
        assert_eq!(Target::parse("unix:///var/run/docker.sock"), Some(Target::Unix("/var/run/docker.sock".into())));
        assert_eq!(Target::parse("tcp://127.0.0.1:2375"), Some(Target::Tcp("127.0.0.1:2375".into())));
        assert_eq!(Target::parse("http://docker:2375/"), Some(Target::Tcp("docker:2375".into())));
        for bad in ["", "unix://relative.sock", "tcp://nohost", "tcp://:2375", "https://h:1", "/var/run/docker.sock"] {
            assert_eq!(Target::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(query_value(r#"{"driver":["loom-null"]}"#), "%7B%22driver%22%3A%5B%22loom-null%22%5D%7D");
    }
}
