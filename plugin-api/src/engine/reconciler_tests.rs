use std::sync::Mutex as StdMutex;

use async_trait::async_trait;

use super::*;
use crate::engine::fake_docker::{not_found, version, FakeDocker, Reply};
use crate::engine::reconcile::{HeldAllocation, HeldEndpoint, HeldNetwork};
use crate::error::{PluginError, PluginResult};
use crate::wire::ipam::{
    AddressSpacesResponse, RequestAddressRequest, RequestAddressResponse, RequestPoolRequest, RequestPoolResponse,
};
use crate::wire::network::{
    CapabilitiesResponse, CreateEndpointRequest, CreateEndpointResponse, CreateNetworkRequest, JoinRequest,
    JoinResponse, Scope,
};

const CONFIRM: Duration = Duration::from_millis(200);
const NETWORKS_OF_LOOM_TEST: &str = "/v1.41/networks?filters=%7B%22driver%22%3A%5B%22loom-test%22%5D%7D";

type Calls = Arc<StdMutex<Vec<String>>>;

/// A network driver holding what a test says and recording the calls the loop makes.
struct Holder {
    held: StdMutex<Vec<HeldNetwork>>,
    calls: Calls,
    failing_endpoint: Option<&'static str>,
}

#[async_trait]
impl NetworkDriver for Holder {
    fn capabilities(&self) -> CapabilitiesResponse {
        CapabilitiesResponse { scope: Scope::Local, connectivity_scope: Scope::Local }
    }
    async fn create_network(&self, _req: CreateNetworkRequest) -> PluginResult<()> {
        Ok(())
    }
    async fn delete_network(&self, req: NetworkRef) -> PluginResult<()> {
        self.calls.lock().unwrap().push(format!("delete_network {}", req.network_id));
        self.held.lock().unwrap().retain(|n| n.id != req.network_id);
        Ok(())
    }
    async fn create_endpoint(&self, _req: CreateEndpointRequest) -> PluginResult<CreateEndpointResponse> {
        Ok(CreateEndpointResponse::default())
    }
    async fn delete_endpoint(&self, req: EndpointRef) -> PluginResult<()> {
        self.calls.lock().unwrap().push(format!("delete_endpoint {}/{}", req.network_id, req.endpoint_id));
        if self.failing_endpoint == Some(req.endpoint_id.as_str()) {
            return Err(PluginError::new("veth busy"));
        }
        for network in self.held.lock().unwrap().iter_mut() {
            network.endpoints.retain(|e| e.id != req.endpoint_id);
        }
        Ok(())
    }
    async fn join(&self, _req: JoinRequest) -> PluginResult<JoinResponse> {
        Ok(JoinResponse::default())
    }
    async fn leave(&self, req: EndpointRef) -> PluginResult<()> {
        self.calls.lock().unwrap().push(format!("leave {}/{}", req.network_id, req.endpoint_id));
        Err(PluginError::new("endpoint is not joined"))
    }
    async fn held_networks(&self) -> Option<Vec<HeldNetwork>> {
        Some(self.held.lock().unwrap().clone())
    }
}

fn holder(held: Vec<HeldNetwork>, failing_endpoint: Option<&'static str>) -> (Plugin, Calls) {
    let calls = Calls::default();
    let driver = Holder { held: StdMutex::new(held), calls: calls.clone(), failing_endpoint };
    (Plugin::network(driver), calls)
}

fn held(id: &str, endpoints: &[&str]) -> HeldNetwork {
    HeldNetwork {
        id: id.into(),
        global: false,
        endpoints: endpoints.iter().map(|e| HeldEndpoint { id: e.to_string() }).collect(),
    }
}

/// Docker has network n1 with endpoint e1 and nothing else of driver `loom-test`.
fn docker_with_n1(target: &str) -> Reply {
    match target {
        "/version" => version("1.41"),
        NETWORKS_OF_LOOM_TEST => Reply::Json(200, r#"[{"Id":"n1","Driver":"loom-test"}]"#.into()),
        "/v1.41/networks/n1" => Reply::Json(
            200,
            r#"{"Id":"n1","Name":"one","Driver":"loom-test","Containers":{"c1":{"Name":"web","EndpointID":"e1"}}}"#
                .into(),
        ),
        other if other.starts_with("/v1.41/events") => Reply::Stream(vec![(Duration::from_secs(3600), String::new())]),
        other => not_found(other),
    }
}

fn reconciler(docker_host: &str, name: &str, plugin: &Plugin) -> Reconciler {
    let config = ReconcileConfig { interval: Duration::from_secs(60), confirm_after: CONFIRM };
    Reconciler::new(Engine::new(docker_host).unwrap(), name, plugin, config)
}

fn calls(calls: &Calls) -> Vec<String> {
    calls.lock().unwrap().clone()
}

#[tokio::test]
async fn what_docker_lost_is_released_after_confirmation_endpoints_first() {
    let docker = FakeDocker::start(docker_with_n1);
    let (plugin, recorded) = holder(vec![held("gone", &["e2"]), held("n1", &["e1", "e9"])], None);
    let reconciler = reconciler(&docker.url(), "loom-test", &plugin);
    assert!(reconciler.has_anything_to_reconcile().await);

    let first = reconciler.pass().await;
    assert!(first.docker_answered);
    assert_eq!((first.released.len(), first.suspects), (0, 3), "{first:?}");
    assert!(calls(&recorded).is_empty(), "released before confirmation: {:?}", calls(&recorded));

    tokio::time::sleep(CONFIRM).await;
    let second = reconciler.pass().await;
    assert_eq!(second.released.len(), 3, "{second:?}");
    assert_eq!(
        calls(&recorded),
        ["leave gone/e2", "delete_endpoint gone/e2", "leave n1/e9", "delete_endpoint n1/e9", "delete_network gone"]
    );
    assert_eq!(plugin.network.as_ref().unwrap().held_networks().await, Some(vec![held("n1", &["e1"])]));

    let third = reconciler.pass().await;
    assert_eq!((third.released.len(), third.suspects, third.next_due), (0, 0, None));
    assert_eq!(reconciler.passes(), 3);
}

#[tokio::test]
async fn nothing_is_removed_while_docker_cannot_be_asked() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let (plugin, recorded) = holder(vec![held("gone", &["e2"])], None);
    let reconciler = reconciler(&format!("unix://{}", socket.display()), "loom-test", &plugin);
    for _ in 0..3 {
        let report = reconciler.pass().await;
        assert!(!report.docker_answered);
        assert!(report.released.is_empty());
        tokio::time::sleep(CONFIRM).await;
    }
    assert!(calls(&recorded).is_empty(), "{:?}", calls(&recorded));

    // The same driver, once dockerd answers there: the loss is seen, confirmed and released.
    let _docker = FakeDocker::start_at(dir, socket, docker_with_n1);
    assert!(reconciler.pass().await.released.is_empty(), "released on the first pass that saw it missing");
    tokio::time::sleep(CONFIRM).await;
    assert_eq!(reconciler.pass().await.released.len(), 2);
    assert_eq!(calls(&recorded), ["leave gone/e2", "delete_endpoint gone/e2", "delete_network gone"]);
}

#[tokio::test]
async fn a_network_whose_endpoint_could_not_be_released_is_kept_for_the_next_pass() {
    let docker = FakeDocker::start(docker_with_n1);
    let (plugin, recorded) = holder(vec![held("gone", &["e2"])], Some("e2"));
    let reconciler = reconciler(&docker.url(), "loom-test", &plugin);
    reconciler.pass().await;
    tokio::time::sleep(CONFIRM).await;
    let report = reconciler.pass().await;
    assert!(report.released.is_empty());
    assert_eq!(report.failed.len(), 2, "{report:?}");
    assert_eq!(calls(&recorded), ["leave gone/e2", "delete_endpoint gone/e2"]);
    assert_eq!(report.suspects, 2, "kept as suspects: the next pass retries");
}

/// An IPAM driver holding what a test says and recording releases.
struct Allocations {
    held: StdMutex<Vec<HeldAllocation>>,
    calls: Calls,
}

#[async_trait]
impl IpamDriver for Allocations {
    fn default_address_spaces(&self) -> AddressSpacesResponse {
        AddressSpacesResponse { local_default_address_space: "l".into(), global_default_address_space: "g".into() }
    }
    async fn request_pool(&self, _req: RequestPoolRequest) -> PluginResult<RequestPoolResponse> {
        Err(PluginError::new("not in this test"))
    }
    async fn release_pool(&self, req: ReleasePoolRequest) -> PluginResult<()> {
        self.calls.lock().unwrap().push(format!("release_pool {}", req.pool_id));
        self.held
            .lock()
            .unwrap()
            .retain(|a| !matches!(a, HeldAllocation::Pool { pool_id, .. } if *pool_id == req.pool_id));
        Ok(())
    }
    async fn request_address(&self, _req: RequestAddressRequest) -> PluginResult<RequestAddressResponse> {
        Err(PluginError::new("not in this test"))
    }
    async fn release_address(&self, req: ReleaseAddressRequest) -> PluginResult<()> {
        self.calls.lock().unwrap().push(format!("release_address {} {}", req.pool_id, req.address));
        self.held.lock().unwrap().retain(|a| match a {
            HeldAllocation::Address { address, .. } | HeldAllocation::Gateway { address, .. } => {
                address.to_string() != req.address
            }
            HeldAllocation::Pool { .. } => true,
        });
        Ok(())
    }
    async fn held_allocations(&self) -> Option<Vec<HeldAllocation>> {
        Some(self.held.lock().unwrap().clone())
    }
}

#[tokio::test]
async fn ipam_releases_addresses_then_pools_that_no_docker_network_of_it_has() {
    let docker = FakeDocker::start(|target| match target {
        "/version" => version("1.45"),
        "/v1.44/networks" => Reply::Json(
            200,
            r#"[{"Id":"n1","IPAM":{"Driver":"loom-ipam"}},{"Id":"n2","IPAM":{"Driver":"default"}}]"#.into(),
        ),
        "/v1.44/networks/n1" => Reply::Json(
            200,
            r#"{"Id":"n1","Driver":"loom-bridge","IPAM":{"Driver":"loom-ipam","Config":[{"Subnet":"10.40.0.0/24"}]},
               "Containers":{"c1":{"EndpointID":"e1","IPv4Address":"10.40.0.3/24"}}}"#
                .into(),
        ),
        "/v1.44/networks/n2" => panic!("a network of another IPAM driver was inspected"),
        other => not_found(other),
    });
    let (p40, p50) = ("loom/10.40.0.0/24", "loom/10.50.0.0/24");
    let allocation = |kind: &str, pool_id: &str, subnet: &str, ip: &str| {
        let (pool_id, subnet, address) = (pool_id.to_string(), subnet.parse().unwrap(), ip.parse().unwrap());
        match kind {
            "address" => HeldAllocation::Address { pool_id, subnet, address },
            _ => HeldAllocation::Gateway { pool_id, subnet, address },
        }
    };
    let held = vec![
        allocation("gateway", p40, "10.40.0.0/24", "10.40.0.1"),
        allocation("address", p40, "10.40.0.0/24", "10.40.0.3"),
        allocation("address", p40, "10.40.0.0/24", "10.40.0.4"),
        HeldAllocation::Pool { pool_id: p40.into(), subnet: "10.40.0.0/24".parse().unwrap() },
        allocation("gateway", p50, "10.50.0.0/24", "10.50.0.1"),
        HeldAllocation::Pool { pool_id: p50.into(), subnet: "10.50.0.0/24".parse().unwrap() },
    ];
    let recorded = Calls::default();
    let plugin = Plugin::ipam(Allocations { held: StdMutex::new(held), calls: recorded.clone() });
    let reconciler = reconciler(&docker.url(), "loom-ipam", &plugin);
    reconciler.pass().await;
    tokio::time::sleep(CONFIRM).await;
    let report = reconciler.pass().await;
    assert_eq!(report.released.len(), 3, "{report:?}");
    assert_eq!(
        calls(&recorded),
        [
            format!("release_address {p40} 10.40.0.4"),
            format!("release_address {p50} 10.50.0.1"),
            format!("release_pool {p50}"),
        ]
    );
}

async fn wait_for_passes(reconciler: &Reconciler, passes: u64, within: Duration) {
    let deadline = Instant::now() + within;
    while reconciler.passes() < passes {
        assert!(Instant::now() < deadline, "{} passes after {within:?}, expected {passes}", reconciler.passes());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_loop_passes_at_start_on_an_empty_request_and_on_a_network_event() {
    let event =
        r#"{"Type":"network","Action":"destroy","Actor":{"ID":"n7","Attributes":{"name":"x","type":"loom-test"}}}"#;
    let docker = FakeDocker::start(move |target| match target {
        t if t.starts_with("/v1.41/events") => Reply::Stream(vec![
            (Duration::from_millis(1500), event.to_string()),
            (Duration::from_secs(3600), String::new()),
        ]),
        other => docker_with_n1(other),
    });
    let (plugin, _) = holder(vec![held("n1", &["e1"])], None);
    let reconciler = reconciler(&docker.url(), "loom-test", &plugin);
    let running = reconciler.clone().spawn();
    wait_for_passes(&reconciler, 1, Duration::from_secs(2)).await;

    // dockerd 20.10's retry after a driver died: a request with an empty body.
    let started = Instant::now();
    let (status, answer) = plugin.handle("NetworkDriver.DeleteNetwork", b"").await;
    assert_eq!(status, hyper::StatusCode::INTERNAL_SERVER_ERROR, "{answer}");
    wait_for_passes(&reconciler, 2, Duration::from_secs(1)).await;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(reconciler.passes(), 2, "the interval is a minute: no other pass yet");

    // The event arrives 1.5 s after the stream opened; one pass follows it, debounced.
    wait_for_passes(&reconciler, 3, Duration::from_secs(4)).await;
    assert!(docker.requests().iter().any(|r| r.starts_with("/v1.41/events")), "{:?}", docker.requests());
    let stopping = Instant::now();
    running.stop().await;
    assert!(stopping.elapsed() < Duration::from_secs(1));
}

/// A dockerd with no network of loom-ipam, and `cluster_store` in its /info.
fn docker_without_networks(cluster_store: &'static str) -> FakeDocker {
    FakeDocker::start(move |target| match target {
        "/version" => version("1.41"),
        "/v1.41/networks" => Reply::Json(200, "[]".into()),
        "/v1.41/info" => Reply::Json(200, format!(r#"{{"Name":"h1","ClusterStore":"{cluster_store}"}}"#)),
        other => not_found(other),
    })
}

#[tokio::test]
async fn global_pools_are_not_judged_by_a_dockerd_with_a_cluster_store() {
    let global = "GlobalDefault/10.0.1.0/24";
    let held = || vec![HeldAllocation::Pool { pool_id: global.into(), subnet: "10.0.1.0/24".parse().unwrap() }];
    for (cluster_store, released) in [("etcd://10.250.0.254:2379", 0), ("", 1)] {
        let docker = docker_without_networks(cluster_store);
        let recorded = Calls::default();
        let plugin = Plugin::ipam(Allocations { held: StdMutex::new(held()), calls: recorded.clone() });
        let reconciler = reconciler(&docker.url(), "loom-ipam", &plugin);
        reconciler.pass().await;
        tokio::time::sleep(CONFIRM).await;
        let report = reconciler.pass().await;
        assert!(report.docker_answered);
        assert_eq!(report.released.len(), released, "cluster store {cluster_store:?}: {report:?}");
        assert_eq!(calls(&recorded).len(), released);
    }
}

#[tokio::test]
async fn a_plugin_that_keeps_nothing_to_reconcile_never_asks_docker() {
    let docker = FakeDocker::start(docker_with_n1);
    let idle = reconciler(&docker.url(), "loom-test", &Plugin::default());
    let running = idle.clone().spawn();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(idle.passes(), 0);
    assert!(docker.requests().is_empty(), "{:?}", docker.requests());
    running.stop().await;

    // The same Docker is asked by a plugin that does keep something.
    let (plugin, _) = holder(vec![held("n1", &["e1"])], None);
    let running = reconciler(&docker.url(), "loom-test", &plugin).spawn();
    let deadline = Instant::now() + Duration::from_secs(2);
    while !docker.requests().iter().any(|r| r == NETWORKS_OF_LOOM_TEST) {
        assert!(Instant::now() < deadline, "{:?}", docker.requests());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.stop().await;
}
