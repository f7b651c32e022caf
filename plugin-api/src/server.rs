//! HTTP/1.1 over a unix socket: routes `POST /<Subsystem>.<Method>` to the driver traits.
//!
//! Every failure (bad JSON, empty body, wrong types, driver error, even a driver panic) is answered
//! with `{"Err": ...}` and an error status; the connection is never dropped on the client.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::net::UnixListener;
use tracing::{debug, info, warn};

use crate::driver::{IpamDriver, NetworkDriver};
use crate::error::{PluginError, PluginResult};
use crate::wire::ActivateResponse;

pub const CONTENT_TYPE_PLUGIN: &str = "application/vnd.docker.plugins.v1+json";

/// Requests larger than this are refused; dockerd's are a few kilobytes.
const MAX_BODY_BYTES: usize = 4 << 20;

/// How long in-flight requests may run on after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// What one socket serves: a network driver, an IPAM driver, or both.
#[derive(Clone, Default)]
pub struct Plugin {
    pub network: Option<Arc<dyn NetworkDriver>>,
    pub ipam: Option<Arc<dyn IpamDriver>>,
}

impl Plugin {
    pub fn network(driver: impl NetworkDriver) -> Self {
        Self { network: Some(Arc::new(driver)), ipam: None }
    }

    pub fn ipam(driver: impl IpamDriver) -> Self {
        Self { network: None, ipam: Some(Arc::new(driver)) }
    }

    fn implements(&self) -> Vec<String> {
        let mut list = Vec::new();
        if self.network.is_some() {
            list.push("NetworkDriver".to_string());
        }
        if self.ipam.is_some() {
            list.push("IpamDriver".to_string());
        }
        list
    }

    /// Answers one request; never fails and never panics.
    pub async fn handle(&self, method: &str, body: &[u8]) -> (StatusCode, Value) {
        let started = Instant::now();
        let ids = RequestIds::from_body(body);
        let outcome = AssertUnwindSafe(self.dispatch(method, body)).catch_unwind().await;
        let outcome = outcome.unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(PluginError::new(format!("internal error in {method}: {what}; see the plugin's log")))
        });
        let elapsed = started.elapsed();
        crate::metrics::global().request_done(method, outcome.as_ref().err().map(PluginError::status), elapsed);
        let elapsed_us = elapsed.as_micros() as u64;
        match outcome {
            Ok(value) => {
                info!(method, network = ids.network, endpoint = ids.endpoint, pool = ids.pool, elapsed_us, "ok");
                (StatusCode::OK, value)
            }
            Err(err) => {
                warn!(
                    method,
                    network = ids.network,
                    endpoint = ids.endpoint,
                    pool = ids.pool,
                    elapsed_us,
                    status = err.status().as_u16(),
                    error = err.message(),
                    "failed"
                );
                (err.status(), json!({ "Err": err.message() }))
            }
        }
    }

    async fn dispatch(&self, method: &str, body: &[u8]) -> PluginResult<Value> {
        let (subsystem, _) = method.split_once('.').unwrap_or((method, ""));
        match subsystem {
            "Plugin" if method == "Plugin.Activate" => reply(&ActivateResponse { implements: self.implements() }),
            "Netloom" if method == crate::siblings::METHOD => match &self.network {
                Some(driver) => reply(&crate::siblings::SubnetsResponse { networks: driver.claimed_subnets() }),
                None => Err(PluginError::unknown_method(method)),
            },
            "Netloom" if method == crate::status::STATUS => reply(&crate::status::status(self).await),
            "Netloom" if method == crate::status::INSPECT => crate::status::inspect(self, body).await,
            "Netloom" => crate::status::control(self, method, body).await,
            "NetworkDriver" => match &self.network {
                Some(driver) => dispatch_network(driver.as_ref(), method, body).await,
                None => Err(PluginError::unknown_method(method)),
            },
            "IpamDriver" => match &self.ipam {
                Some(driver) => dispatch_ipam(driver.as_ref(), method, body).await,
                None => Err(PluginError::unknown_method(method)),
            },
            _ => Err(PluginError::unknown_method(method)),
        }
    }
}

async fn dispatch_network(d: &dyn NetworkDriver, method: &str, body: &[u8]) -> PluginResult<Value> {
    let ok = |()| json!({});
    match method {
        "NetworkDriver.GetCapabilities" => reply(&d.capabilities()),
        "NetworkDriver.CreateNetwork" => d.create_network(parse(method, body)?).await.map(ok),
        "NetworkDriver.DeleteNetwork" => d.delete_network(parse(method, body)?).await.map(ok),
        "NetworkDriver.AllocateNetwork" => reply(&d.allocate_network(parse(method, body)?).await?),
        "NetworkDriver.FreeNetwork" => d.free_network(parse(method, body)?).await.map(ok),
        "NetworkDriver.CreateEndpoint" => reply(&d.create_endpoint(parse(method, body)?).await?),
        "NetworkDriver.EndpointOperInfo" => reply(&d.endpoint_oper_info(parse(method, body)?).await?),
        "NetworkDriver.DeleteEndpoint" => d.delete_endpoint(parse(method, body)?).await.map(ok),
        "NetworkDriver.Join" => reply(&d.join(parse(method, body)?).await?),
        "NetworkDriver.Leave" => d.leave(parse(method, body)?).await.map(ok),
        "NetworkDriver.DiscoverNew" => d.discover_new(parse(method, body)?).await.map(ok),
        "NetworkDriver.DiscoverDelete" => d.discover_delete(parse(method, body)?).await.map(ok),
        "NetworkDriver.ProgramExternalConnectivity" => {
            d.program_external_connectivity(parse(method, body)?).await.map(ok)
        }
        "NetworkDriver.RevokeExternalConnectivity" => {
            d.revoke_external_connectivity(parse(method, body)?).await.map(ok)
        }
        _ => Err(PluginError::unknown_method(method)),
    }
}

async fn dispatch_ipam(d: &dyn IpamDriver, method: &str, body: &[u8]) -> PluginResult<Value> {
    match method {
        "IpamDriver.GetCapabilities" => reply(&d.capabilities()),
        "IpamDriver.GetDefaultAddressSpaces" => reply(&d.default_address_spaces()),
        "IpamDriver.RequestPool" => reply(&d.request_pool(parse(method, body)?).await?),
        "IpamDriver.ReleasePool" => d.release_pool(parse(method, body)?).await.map(|()| json!({})),
        "IpamDriver.RequestAddress" => reply(&d.request_address(parse(method, body)?).await?),
        "IpamDriver.ReleaseAddress" => d.release_address(parse(method, body)?).await.map(|()| json!({})),
        _ => Err(PluginError::unknown_method(method)),
    }
}

fn parse<T: DeserializeOwned>(method: &str, body: &[u8]) -> PluginResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        crate::engine::reconcile::request_pass();
        return Err(PluginError::new(format!(
            "{method} needs a JSON request body but got an empty one (a retried request?); retry the docker command"
        )));
    }
    serde_json::from_slice(body).map_err(|e| PluginError::new(format!("invalid {method} request: {e}")))
}

fn reply<T: Serialize>(value: &T) -> PluginResult<Value> {
    serde_json::to_value(value).map_err(|e| PluginError::new(format!("encoding the reply failed: {e}")))
}

/// Ids picked out of a request body for the per-request log line, whatever the method.
#[derive(Default)]
struct RequestIds {
    network: Option<String>,
    endpoint: Option<String>,
    pool: Option<String>,
}

impl RequestIds {
    fn from_body(body: &[u8]) -> Self {
        let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
            return Self::default();
        };
        let short = |key: &str| map.get(key).and_then(Value::as_str).map(|s| s.chars().take(12).collect());
        Self {
            network: short("NetworkID"),
            endpoint: short("EndpointID"),
            pool: map.get("PoolID").and_then(Value::as_str).map(String::from),
        }
    }
}

async fn handle_http(plugin: Arc<Plugin>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method_name = req.uri().path().trim_start_matches('/').to_string();
    let (status, body) = if req.method() != Method::POST {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            json!({ "Err": format!("{} is not supported; plugin calls are POST", req.method()) }),
        )
    } else {
        match Limited::new(req.into_body(), MAX_BODY_BYTES).collect().await {
            Ok(collected) => plugin.handle(&method_name, &collected.to_bytes()).await,
            Err(e) => {
                (StatusCode::BAD_REQUEST, json!({ "Err": format!("reading the {method_name} request failed: {e}") }))
            }
        }
    };
    let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| b"{\"Err\":\"encoding failed\"}".to_vec());
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static(CONTENT_TYPE_PLUGIN));
    response
}

/// Serves `plugin` on `listener` until `shutdown` resolves, then lets in-flight requests finish.
pub async fn serve(listener: UnixListener, plugin: Plugin, shutdown: impl Future<Output = ()>) {
    let plugin = Arc::new(plugin);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let plugin = plugin.clone();
                let service = service_fn(move |req| {
                    let plugin = plugin.clone();
                    async move { Ok::<_, Infallible>(handle_http(plugin, req).await) }
                });
                let connection = graceful.watch(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => warn!("in-flight requests still running after {SHUTDOWN_GRACE:?}; exiting"),
    }
}
