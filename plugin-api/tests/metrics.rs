//! `--metrics-addr` end to end: a plugin served on a unix socket, its metrics scraped over TCP.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use netloom_plugin_api::client::PluginClient;
use netloom_plugin_api::engine::{HeldEndpoint, HeldNetwork};
use netloom_plugin_api::wire::network::*;
use netloom_plugin_api::{metrics, server, NetworkDriver, Plugin, PluginError, PluginResult};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener};

/// Holds the endpoints it was asked to create, by network; refuses network "refuse".
#[derive(Default)]
struct Holder {
    endpoints: Mutex<BTreeMap<String, Vec<String>>>,
}

#[async_trait]
impl NetworkDriver for Holder {
    fn capabilities(&self) -> CapabilitiesResponse {
        CapabilitiesResponse { scope: Scope::Local, connectivity_scope: Scope::Local }
    }
    async fn create_network(&self, _req: CreateNetworkRequest) -> PluginResult<()> {
        Ok(())
    }
    async fn delete_network(&self, _req: NetworkRef) -> PluginResult<()> {
        Ok(())
    }
    async fn create_endpoint(&self, req: CreateEndpointRequest) -> PluginResult<CreateEndpointResponse> {
        if req.network_id == "refuse" {
            return Err(PluginError::new("no such subnet"));
        }
        self.endpoints.lock().unwrap().entry(req.network_id).or_default().push(req.endpoint_id);
        Ok(CreateEndpointResponse::default())
    }
    async fn delete_endpoint(&self, _req: EndpointRef) -> PluginResult<()> {
        Ok(())
    }
    async fn join(&self, _req: JoinRequest) -> PluginResult<JoinResponse> {
        Ok(JoinResponse::default())
    }
    async fn leave(&self, _req: EndpointRef) -> PluginResult<()> {
        Ok(())
    }
    async fn held_networks(&self) -> Option<Vec<HeldNetwork>> {
        let endpoints = self.endpoints.lock().unwrap();
        let held = endpoints.iter().map(|(network, ids)| HeldNetwork {
            id: network.clone(),
            global: false,
            endpoints: ids.iter().map(|id| HeldEndpoint { id: id.clone() }).collect(),
        });
        Some(held.collect())
    }
}

/// One HTTP/1.1 request over a fresh TCP connection: the status line and the whole answer.
async fn http_get(addr: std::net::SocketAddr, request_line: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("{request_line} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

/// The value of the sample `series` (name and labels exactly as exposed).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_count_requests_and_show_what_the_driver_holds() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("loom-test.sock");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let plugin = Plugin::network(Holder::default());
    let unix = UnixListener::bind(&socket).unwrap();
    let serving = tokio::spawn(server::serve(unix, plugin.clone(), async move { _ = stopped.await }));
    let tcp = metrics::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = tcp.local_addr().unwrap();
    let scraping = tokio::spawn(metrics::serve(tcp, plugin));

    let mut client = PluginClient::connect(&socket).await.unwrap();
    let create = "NetworkDriver.CreateEndpoint";
    client.call(create, &json!({"NetworkID": "net-a", "EndpointID": "ep-1"})).await.unwrap();
    let refused = client.call(create, &json!({"NetworkID": "refuse", "EndpointID": "ep-2"})).await;
    assert!(refused.unwrap_err().to_string().contains("no such subnet"));

    let answer = http_get(metrics_addr, "GET /metrics").await;
    let (head, text) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");
    let requests =
        |outcome: &str| sample(text, &format!("netloom_requests_total{{method=\"{create}\",outcome=\"{outcome}\"}}"));
    assert_eq!(requests("ok"), Some(1.0), "{text}");
    assert_eq!(requests("error"), Some(1.0), "{text}");
    let durations = format!("netloom_request_duration_seconds_count{{method=\"{create}\"}}");
    assert_eq!(sample(text, &durations), Some(2.0), "{text}");
    let inf_bucket = format!("netloom_request_duration_seconds_bucket{{method=\"{create}\",le=\"+Inf\"}}");
    assert_eq!(sample(text, &inf_bucket), Some(2.0), "{text}");
    assert_eq!(sample(text, "netloom_networks"), Some(1.0), "{text}");
    assert_eq!(sample(text, "netloom_endpoints{network=\"net-a\"}"), Some(1.0), "{text}");
    assert_eq!(sample(text, "netloom_endpoints{network=\"refuse\"}"), None, "{text}");

    client.call(create, &json!({"NetworkID": "net-a", "EndpointID": "ep-3"})).await.unwrap();
    let answer = http_get(metrics_addr, "GET /metrics").await;
    assert_eq!(sample(&answer, "netloom_endpoints{network=\"net-a\"}"), Some(2.0), "asked again at scrape: {answer}");

    for other in ["GET /", "GET /metrics/x", "POST /metrics"] {
        let answer = http_get(metrics_addr, other).await;
        assert!(answer.starts_with("HTTP/1.1 404"), "{other}: {answer}");
    }

    let taken = metrics::bind(&metrics_addr.to_string()).await.unwrap_err();
    assert!(format!("{taken:#}").contains(&format!("--metrics-addr {metrics_addr}")), "{taken:#}");

    stop.send(()).unwrap();
    serving.await.unwrap();
    scraping.abort();
}
