//! The Engine API client against real dockerd (20.10 and 26): the negotiated API version, a
//! plugin network found by its driver's name with its container (id, name), the container's name
//! and `--network-alias` on that network, lookups of what does not exist, and network events
//! (create, connect) as they happen.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use netloom_plugin_api::engine::{DockerNetwork, Engine, NetworkEvent};
use netloom_tests::{scenario_tests, Cluster, DockerVersion, HostConfig, IMAGE};
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

scenario_tests! {
    docker_engine_docker20: "engine20" => |c| engine_scenario(c, DockerVersion::V20, "1.41"),
    docker_engine_docker26: "engine26" => |c| engine_scenario(c, DockerVersion::V26, "1.44"),
}
