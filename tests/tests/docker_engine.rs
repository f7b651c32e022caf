//! The Engine API client against real dockerd (20.10 and 26): the negotiated API version, a
//! plugin network found by its driver's name with its container (id, name), the container's name
//! and `--network-alias` on that network, lookups of what does not exist, and network events
//! (create, connect) as they happen. And the loop in a real driver: a network made behind
//! Docker's back is removed within one reconcile period, while Docker's own network is kept.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use netloom_plugin_api::client::PluginClient;
use netloom_plugin_api::engine::{DockerNetwork, Engine, NetworkEvent};
use netloom_tests::{scenario_tests, Cluster, DockerVersion, HostConfig, FAST_RECONCILE, IMAGE};
use serde_json::json;
use tokio::sync::mpsc::Receiver;

/// The next event for which `wanted` holds, within 15 s.
async fn next_event(
    events: &mut Receiver<NetworkEvent>,
    wanted: impl Fn(&NetworkEvent) -> bool,
) -> Result<NetworkEvent> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) if wanted(&event) => return Ok(event),
            Ok(Some(event)) => seen.push(event),
            Ok(None) => bail!("the event stream ended; events seen: {seen:?}"),
            Err(_) => bail!("no such event within 15 s; events seen: {seen:?}"),
        }
    }
}

fn names(networks: &[DockerNetwork]) -> Vec<&str> {
    networks.iter().map(|n| n.name.as_str()).collect()
}

fn engine_scenario(c: &Cluster, docker: DockerVersion, expected_api: &str) -> Result<()> {
    let h = c.add_host(HostConfig::new("h1", docker))?;
    h.start_plugin("loom-null", &[])?;
    let engine = Engine::new(&format!("unix://{}", h.docker_socket().display()))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        ensure!(engine.api_version().await? == expected_api, "API version {:?}", engine.api_version().await);
        ensure!(engine.networks_of_driver("loom-null").await?.is_empty(), "a loom-null network before any was made");
        let mut events = engine.network_events().await.context("following network events")?;

        h.docker(&["network", "create", "-d", "loom-null", "--subnet", "10.77.0.0/24", "quiet"])?;
        let network_id = h.docker(&["network", "inspect", "--format", "{{.Id}}", "quiet"])?.trim().to_string();
        let created = next_event(&mut events, |e| e.action == "create" && e.network_id == network_id).await?;
        ensure!(created.network_name.as_deref() == Some("quiet"), "create event: {created:?}");
        ensure!(created.driver.as_deref() == Some("loom-null"), "create event: {created:?}");

        h.docker(&[
            "run",
            "-d",
            "--name",
            "web",
            "--network",
            "quiet",
            "--network-alias",
            "www",
            IMAGE,
            "sleep",
            "600",
        ])?;
        let container_id = h.docker(&["inspect", "--format", "{{.Id}}", "web"])?.trim().to_string();
        let connected = next_event(&mut events, |e| e.action == "connect" && e.network_id == network_id).await?;
        ensure!(connected.container_id.as_deref() == Some(container_id.as_str()), "connect event: {connected:?}");

        // The plugin network by its driver's name (the socket's name), exactly: no other network,
        // and no network for a prefix of the name.
        let networks = engine.networks_of_driver("loom-null").await?;
        ensure!(names(&networks) == ["quiet"], "loom-null networks: {networks:?}");
        let quiet = &networks[0];
        ensure!(quiet.id == network_id && quiet.driver == "loom-null" && quiet.scope == "local", "{quiet:?}");
        ensure!(quiet.ipam_driver == "default", "{quiet:?}");
        let subnet = "10.77.0.0/24".parse()?;
        ensure!(quiet.pools.iter().any(|p| p.subnet == Some(subnet)), "pools: {:?}", quiet.pools);
        // Docker shows a gateway only when the user gave one: why loom-ipam reports the gateway
        // it handed out apart from endpoint addresses (kept for as long as the subnet is).
        ensure!(quiet.pools.iter().all(|p| p.gateway.is_none()), "a gateway Docker was not given: {:?}", quiet.pools);
        ensure!(quiet.endpoints.len() == 1, "endpoints: {:?}", quiet.endpoints);
        let endpoint = &quiet.endpoints[0];
        ensure!(endpoint.container_id == container_id && endpoint.name == "web", "endpoint: {endpoint:?}");
        ensure!(!endpoint.endpoint_id.is_empty(), "endpoint: {endpoint:?}");
        ensure!(engine.networks_of_driver("loom-nul").await?.is_empty(), "a prefix of the driver's name matched");
        ensure!(names(&engine.networks_of_driver("bridge").await?) == ["bridge"], "Docker's own bridge network");
        ensure!(names(&engine.networks_of_ipam("default").await?).contains(&"quiet"), "quiet by its IPAM driver");

        // The names a DNS answer or loomctl shows, by network name and by id.
        for network in ["quiet", network_id.as_str()] {
            let names = engine.container_names(&container_id, network).await?.context("web's names")?;
            ensure!(names.name == "web", "{names:?}");
            ensure!(names.aliases.contains(&"www".to_string()), "{names:?}");
            ensure!(!names.aliases.contains(&"web".to_string()), "the name among the aliases: {names:?}");
        }
        ensure!(engine.container_names(&container_id, "bridge").await?.is_none(), "web is not on bridge");
        ensure!(engine.container_names("no-such-container", "quiet").await?.is_none());
        ensure!(engine.network("quiet").await?.map(|n| n.id) == Some(network_id.clone()));
        ensure!(engine.network("no-such-network").await?.is_none());

        h.docker(&["rm", "-f", "web"])?;
        h.docker(&["network", "rm", "quiet"])?;
        next_event(&mut events, |e| e.action == "destroy" && e.network_id == network_id).await?;
        ensure!(engine.networks_of_driver("loom-null").await?.is_empty(), "quiet still listed after its removal");
        Ok(())
    })
}

/// Whether any record file under `dir` names `id`.
fn recorded(dir: &Path, id: &str) -> Result<bool> {
    if !dir.exists() {
        return Ok(false);
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let named = path.file_name().is_some_and(|n| n.to_string_lossy().contains(id));
        if named || (path.is_dir() && recorded(&path, id)?) {
            return Ok(true);
        }
    }
    Ok(false)
}

fn loop_scenario(c: &Cluster, docker: DockerVersion) -> Result<()> {
    let h = c.add_host(HostConfig::new("h1", docker))?;
    let plugin = h.start_plugin("loom-null", &[&FAST_RECONCILE[..], &["--log-level", "debug"]].concat())?;
    h.docker(&["network", "create", "-d", "loom-null", "kept"])?;
    let kept_id = h.docker(&["network", "inspect", "--format", "{{.Id}}", "kept"])?.trim().to_string();
    h.docker(&["run", "-d", "--name", "stays", "--network", "kept", IMAGE, "sleep", "600"])?;

    let stray = "5ca1ab1e".repeat(8);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut client = PluginClient::connect(h.path_inside(&plugin.socket())).await?;
        let network = json!({"NetworkID": stray, "Options": {}, "IPv4Data": [], "IPv6Data": []});
        client.call("NetworkDriver.CreateNetwork", &network).await?;
        let endpoint = json!({"NetworkID": stray, "EndpointID": stray, "Interface": {}, "Options": {}});
        client.call("NetworkDriver.CreateEndpoint", &endpoint).await?;
        anyhow::Ok(())
    })?;
    let records = plugin.state_dir().join("records");
    ensure!(recorded(&records, &stray)?, "the stray network was never recorded under {}", records.display());
    ensure!(recorded(&records, &kept_id)?, "Docker's network is not recorded under {}", records.display());

    let deadline = Instant::now() + plugin.reconcile_period() + Duration::from_secs(5);
    while recorded(&records, &stray)? {
        ensure!(Instant::now() < deadline, "the stray network still recorded after {:?}", plugin.reconcile_period());
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = std::fs::read_to_string(plugin.log_path())?;
    let short = &stray[..12];
    for removed in ["endpoint removed: Docker has no such endpoint", "network removed: Docker has no such network"] {
        ensure!(log.lines().any(|l| l.contains(removed) && l.contains(short)), "no {removed:?} line for {short}");
    }
    ensure!(!log.lines().any(|l| l.contains("removed") && l.contains(&kept_id[..12])), "kept was removed:\n{log}");

    // Docker's network and its container are untouched, across another period too.
    std::thread::sleep(plugin.reconcile_interval());
    ensure!(recorded(&records, &kept_id)?, "Docker's network lost its record");
    h.docker(&["run", "--rm", "--network", "kept", IMAGE, "true"]).context("a container on kept after the passes")?;
    h.container_exec("stays", &["true"]).context("the container on kept")?;
    Ok(())
}

scenario_tests! {
    docker_engine_docker20: "engine20" => |c| engine_scenario(c, DockerVersion::V20, "1.41"),
    docker_engine_docker26: "engine26" => |c| engine_scenario(c, DockerVersion::V26, "1.44"),
    reconcile_loop_docker20: "rloop20" => |c| loop_scenario(c, DockerVersion::V20),
    reconcile_loop_docker26: "rloop26" => |c| loop_scenario(c, DockerVersion::V26),
}
