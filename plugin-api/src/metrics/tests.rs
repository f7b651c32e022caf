use std::time::Duration;

use async_trait::async_trait;
use hyper::StatusCode;
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Metrics;
use crate::engine::reconcile::{HeldAllocation, ReconcileConfig, Reconciler, Subject};
use crate::engine::Engine;
use crate::error::PluginResult;
use crate::server::Plugin;
use crate::wire::ipam::{
    AddressSpacesResponse, ReleaseAddressRequest, ReleasePoolRequest, RequestAddressRequest, RequestAddressResponse,
    RequestPoolRequest, RequestPoolResponse,
};
use crate::IpamDriver;
use netloom_store::{KeyValue, StoreError, StoreResult, Txn, TxnOutcome};

fn lines_starting<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|line| line.starts_with(prefix)).collect()
}

#[tokio::test]
async fn requests_are_counted_by_method_and_outcome() {
    let metrics = Metrics::new();
    let create = "NetworkDriver.CreateEndpoint";
    metrics.request_done(create, None, Duration::from_millis(3));
    metrics.request_done(create, None, Duration::from_millis(3));
    metrics.request_done(create, Some(StatusCode::INTERNAL_SERVER_ERROR), Duration::from_millis(3));
    metrics.request_done("Whatever.Path", Some(StatusCode::NOT_FOUND), Duration::from_millis(3));

    let text = metrics.render(&Plugin::default()).await;
    assert!(text.contains("# TYPE netloom_requests_total counter\n"), "{text}");
    let mut requests = lines_starting(&text, "netloom_requests_total{");
    requests.sort();
    assert_eq!(
        requests,
        [
            r#"netloom_requests_total{method="NetworkDriver.CreateEndpoint",outcome="error"} 1"#,
            r#"netloom_requests_total{method="NetworkDriver.CreateEndpoint",outcome="ok"} 2"#,
            r#"netloom_requests_total{method="unknown",outcome="error"} 1"#,
        ],
        "{text}"
    );
}

#[tokio::test]
async fn durations_fall_in_their_bucket() {
    let metrics = Metrics::new();
    metrics.request_done("IpamDriver.RequestPool", None, Duration::from_millis(3));
    let text = metrics.render(&Plugin::default()).await;
    let series = r#"netloom_request_duration_seconds_bucket{method="IpamDriver.RequestPool",le="#;
    let bucket = |le: &str| format!("{series}\"{le}\"}}");
    assert!(text.contains(&format!("{} 0\n", bucket("0.0025"))), "{text}");
    assert!(text.contains(&format!("{} 1\n", bucket("0.005"))), "{text}");
    assert!(text.contains(&format!("{} 1\n", bucket("+Inf"))), "{text}");
    assert!(text.contains("netloom_request_duration_seconds_count{method=\"IpamDriver.RequestPool\"} 1\n"), "{text}");
    assert_eq!(lines_starting(&text, series).len(), 17, "16 buckets and +Inf: {text}");
}

#[tokio::test]
async fn removals_are_counted_by_kind() {
    let metrics = Metrics::new();
    let endpoint = Subject::Endpoint { network_id: "n1".into(), endpoint_id: "e1".into() };
    metrics.removed(&endpoint);
    metrics.removed(&endpoint);
    metrics.removed(&Subject::Pool { pool_id: "p1".into() });
    let text = metrics.render(&Plugin::default()).await;
    assert!(text.contains("netloom_reconciler_removals_total{kind=\"endpoint\"} 2\n"), "{text}");
    assert!(text.contains("netloom_reconciler_removals_total{kind=\"pool\"} 1\n"), "{text}");
    assert!(!text.contains("kind=\"network\""), "{text}");
}

#[tokio::test]
async fn a_plugin_that_does_not_say_what_it_holds_has_no_held_gauges() {
    let metrics = Metrics::new();
    metrics.request_done("Plugin.Activate", None, Duration::from_millis(1));
    let text = metrics.render(&Plugin::default()).await;
    assert!(text.contains("netloom_requests_total"), "the rest is there: {text}");
    for name in ["netloom_networks", "netloom_endpoints", "netloom_ipam_pools", "netloom_ipam_addresses"] {
        assert!(!text.contains(name), "{name}: {text}");
    }
}

struct HoldingIpam(Vec<HeldAllocation>);

#[async_trait]
impl IpamDriver for HoldingIpam {
    fn default_address_spaces(&self) -> AddressSpacesResponse {
        AddressSpacesResponse {
            local_default_address_space: "LocalDefault".into(),
            global_default_address_space: "GlobalDefault".into(),
        }
    }
    async fn request_pool(&self, _req: RequestPoolRequest) -> PluginResult<RequestPoolResponse> {
        unreachable!("not asked")
    }
    async fn release_pool(&self, _req: ReleasePoolRequest) -> PluginResult<()> {
        Ok(())
    }
    async fn request_address(&self, _req: RequestAddressRequest) -> PluginResult<RequestAddressResponse> {
        unreachable!("not asked")
    }
    async fn release_address(&self, _req: ReleaseAddressRequest) -> PluginResult<()> {
        unreachable!("not asked")
    }
    async fn held_allocations(&self) -> Option<Vec<HeldAllocation>> {
        Some(self.0.clone())
    }
}

#[tokio::test]
async fn ipam_gauges_count_pools_once_and_gateways_as_addresses() {
    let subnet = "10.9.0.0/24".parse().unwrap();
    let pool = |id: &str| HeldAllocation::Pool { pool_id: id.into(), subnet };
    let address = |last: u8| HeldAllocation::Address { pool_id: "a".into(), subnet, address: [10, 9, 0, last].into() };
    let gateway = HeldAllocation::Gateway { pool_id: "a".into(), subnet, address: [10, 9, 0, 1].into() };
    let held = vec![pool("a"), pool("a"), pool("b"), gateway, address(2), address(3)];
    let plugin = Plugin::ipam(HoldingIpam(held));

    let text = Metrics::new().render(&plugin).await;
    assert!(text.contains("# TYPE netloom_ipam_pools gauge\nnetloom_ipam_pools 2\n"), "{text}");
    assert!(text.contains("netloom_ipam_addresses 3\n"), "{text}");
    assert!(!text.contains("netloom_networks"), "no network driver: {text}");
}

#[tokio::test]
async fn a_driver_adds_its_own_metrics_to_the_registry() {
    let metrics = Metrics::new();
    let operations: Counter = Counter::default();
    metrics.register(|r| r.register("netloom_example_operations", "Example operations", operations.clone()));
    operations.inc_by(4);
    metrics.request_done("Plugin.Activate", None, Duration::from_millis(1));
    let text = metrics.render(&Plugin::default()).await;
    assert!(text.contains("netloom_example_operations_total 4\n"), "{text}");
    assert!(text.contains("netloom_requests_total"), "{text}");
}

/// A dockerd with no network at all, on TCP: `tcp://` and its address.
async fn docker_without_networks() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("tcp://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut head = vec![0; 4096];
            let read = stream.read(&mut head).await.unwrap_or(0);
            let head = String::from_utf8_lossy(&head[..read]);
            let body = match head.split(' ').nth(1) {
                Some("/version") => r#"{"Version":"fake","ApiVersion":"1.44","MinAPIVersion":"1.12"}"#,
                _ => "[]",
            };
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    url
}

#[tokio::test]
async fn the_reconciler_counts_what_it_removes() {
    let docker = docker_without_networks().await;
    let pool = HeldAllocation::Pool { pool_id: "stray".into(), subnet: "10.9.0.0/24".parse().unwrap() };
    let plugin = Plugin::ipam(HoldingIpam(vec![pool]));
    let config = ReconcileConfig { interval: Duration::from_secs(60), confirm_after: Duration::ZERO };
    let reconciler = Reconciler::new(Engine::new(&docker).unwrap(), "loom-ipam", &plugin, config);
    // The process's registry: other tests of this process may remove pools too, so compare.
    let pools_removed = || async {
        let text = super::global().render(&Plugin::default()).await;
        let line = lines_starting(&text, "netloom_reconciler_removals_total{kind=\"pool\"} ").pop();
        line.and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok()).unwrap_or(0)
    };
    let before = pools_removed().await;
    assert!(reconciler.pass().await.released.is_empty(), "suspected first");
    assert_eq!(pools_removed().await, before);
    assert_eq!(reconciler.pass().await.released, [Subject::Pool { pool_id: "stray".into() }]);
    assert_eq!(pools_removed().await, before + 1);
}

/// A store that answers every read with nothing and refuses every write as unreachable.
struct ReadOnly;

#[async_trait]
impl netloom_store::Store for ReadOnly {
    fn describe(&self) -> String {
        "etcd://192.0.2.1:2379".into()
    }
    async fn get(&self, _: &str) -> StoreResult<Option<KeyValue>> {
        Ok(None)
    }
    async fn list(&self, _: &str) -> StoreResult<Vec<KeyValue>> {
        Ok(Vec::new())
    }
    async fn put(&self, _: &str, _: Vec<u8>) -> StoreResult<u64> {
        Err(StoreError::Unavailable { backend: "etcd", endpoints: "192.0.2.1:2379".into(), detail: "down".into() })
    }
    async fn delete(&self, _: &str) -> StoreResult<bool> {
        Ok(false)
    }
    async fn txn(&self, _: Txn) -> StoreResult<TxnOutcome> {
        Ok(TxnOutcome::Conflict)
    }
    async fn watch(&self, _: &str) -> StoreResult<netloom_store::WatchStream> {
        Err(StoreError::Protocol { backend: "etcd", endpoints: "192.0.2.1:2379".into(), detail: "no".into() })
    }
    async fn put_leased(&self, _: &str, _: Vec<u8>) -> StoreResult<()> {
        Ok(())
    }
}

#[tokio::test]
async fn store_operations_are_counted_by_op_and_outcome() {
    use netloom_store::Store;
    let store = netloom_store::Observed::wrap(std::sync::Arc::new(ReadOnly));
    store.get("a").await.unwrap();
    store.get("b").await.unwrap();
    assert!(store.put("a", b"1".to_vec()).await.is_err());
    assert!(!store.txn(Txn::new()).await.unwrap().committed());
    assert!(store.watch("x").await.is_err());
    let text = Metrics::new().render(&Plugin::default()).await;
    assert!(text.contains("# TYPE netloom_store_operations_total counter\n"), "{text}");
    assert!(text.contains("netloom_store_operations_total{op=\"get\",outcome=\"ok\"} 2\n"), "{text}");
    assert!(text.contains("netloom_store_operations_total{op=\"put\",outcome=\"unavailable\"} 1\n"), "{text}");
    assert!(text.contains("netloom_store_operations_total{op=\"txn\",outcome=\"conflict\"} 1\n"), "{text}");
    assert!(text.contains("netloom_store_operations_total{op=\"watch\",outcome=\"error\"} 1\n"), "{text}");
    assert!(text.contains("netloom_store_operation_seconds_total{op=\"get\"} "), "{text}");
    assert!(!text.contains("op=\"list\""), "an operation never made has no series: {text}");
}
