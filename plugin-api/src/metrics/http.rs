//! `GET /metrics` over HTTP/1.1 on TCP; every other request is answered 404.

use std::convert::Infallible;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::prometheus_text;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::server::Plugin;

const PATH: &str = "/metrics";

/// Listens on `--metrics-addr`; the error names the option, so the binary's exit says what to fix.
pub async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    let listener =
        TcpListener::bind(addr).await.with_context(|| format!("--metrics-addr {addr}: cannot listen there"))?;
    if let Ok(local) = listener.local_addr() {
        info!(metrics_addr = %local, "serving metrics on http://{local}{PATH}");
    }
    Ok(listener)
}

/// Serves the process's metrics, with what `plugin` holds, until the task is dropped.
pub async fn serve(listener: TcpListener, plugin: Plugin) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!(error = %e, "accepting a metrics connection failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let plugin = plugin.clone();
        let service = service_fn(move |req| {
            let plugin = plugin.clone();
            async move { Ok::<_, Infallible>(answer(&plugin, req).await) }
        });
        tokio::spawn(async move {
            if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
                debug!(error = %e, "metrics connection ended with an error");
            }
        });
    }
}

async fn answer(plugin: &Plugin, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET || req.uri().path() != PATH {
        let mut response = Response::new(Full::new(Bytes::from_static(b"not found; metrics are at GET /metrics\n")));
        *response.status_mut() = StatusCode::NOT_FOUND;
        return response;
    }
    let text = super::global().render(plugin).await;
    let mut response = Response::new(Full::new(Bytes::from(text)));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(prometheus_text::CONTENT_TYPE));
    response
}
