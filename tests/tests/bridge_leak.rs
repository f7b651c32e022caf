//! 200 loom-bridge networks with endpoints and published ports, created and removed through the
//! plugin socket (as dockerd would call it), leave the host exactly as it was: links, addresses,
//! routes, iptables and nftables rules, and store keys.

use anyhow::{ensure, Context, Result};
use netloom_plugin_api::client::PluginClient;
use netloom_tests::{scenario, DockerVersion, Host, HostConfig, HostState};
use serde_json::json;

const NETWORKS: u32 = 200;

async fn network_cycle(client: &mut PluginClient, i: u32, create: bool) -> Result<()> {
    let (a, b) = (i / 200, i % 200);
    // Docker's ids are random; derived link names use their first characters, so vary those.
    let net = format!("{i:04x}{:060x}", 0xa);
    let ep = format!("{i:04x}{:060x}", 0xe);
    if create {
        client
            .call("NetworkDriver.CreateNetwork", &json!({
                "NetworkID": net,
                "Options": {"com.docker.network.generic": {}, "com.docker.network.enable_ipv6": false},
                "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": format!("10.{}.{b}.0/24", 100 + a), "Gateway": format!("10.{}.{b}.1/24", 100 + a)}],
                "IPv6Data": []
            }))
            .await?;
        client
            .call(
                "NetworkDriver.CreateEndpoint",
                &json!({
                    "NetworkID": net, "EndpointID": ep,
                    "Interface": {"Address": format!("10.{}.{b}.2/24", 100 + a), "AddressIPv6": "", "MacAddress": ""},
                    "Options": {}
                }),
            )
            .await?;
        let ports = json!([{"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 20000 + i, "HostPortEnd": 20000 + i},
                           {"Proto": 17, "IP": "", "Port": 53, "HostIP": "127.0.0.1", "HostPort": 20000 + i, "HostPortEnd": 20000 + i}]);
        let options = json!({"com.docker.network.portmap": ports, "com.docker.network.endpoint.exposedports": []});
        client
            .call("NetworkDriver.Join", &json!({"NetworkID": net, "EndpointID": ep, "SandboxKey": "/var/run/docker/netns/x", "Options": options}))
            .await?;
        client
            .call(
                "NetworkDriver.ProgramExternalConnectivity",
                &json!({"NetworkID": net, "EndpointID": ep, "Options": options}),
            )
            .await?;
    } else {
        for (method, body) in [
            ("NetworkDriver.RevokeExternalConnectivity", json!({"NetworkID": net, "EndpointID": ep})),
            ("NetworkDriver.Leave", json!({"NetworkID": net, "EndpointID": ep})),
            ("NetworkDriver.DeleteEndpoint", json!({"NetworkID": net, "EndpointID": ep})),
            ("NetworkDriver.DeleteNetwork", json!({"NetworkID": net})),
        ] {
            client.call(method, &body).await.with_context(|| format!("{method} #{i}"))?;
        }
    }
    Ok(())
}

fn leak_scenario(h: &Host, firewall: &str) -> Result<()> {
    let plugin = h.start_plugin("loom-bridge", &["--firewall", firewall])?;
    let socket = h.path_inside(&plugin.socket());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut client = PluginClient::connect(&socket).await?;
        // One warm-up network, so that base chains made on first use are in the baseline.
        network_cycle(&mut client, NETWORKS, true).await?;
        network_cycle(&mut client, NETWORKS, false).await?;
        let before = HostState::take(h)?;
        for i in 0..NETWORKS {
            network_cycle(&mut client, i, true).await.with_context(|| format!("creating network #{i}"))?;
        }
        let busy = HostState::take(h)?.text();
        ensure!(busy.matches("loom").count() >= NETWORKS as usize, "the networks did not show up in the kernel");
        for i in 0..NETWORKS {
            network_cycle(&mut client, i, false).await.with_context(|| format!("removing network #{i}"))?;
        }
        if let Some(diff) = before.diff(&HostState::take(h)?) {
            anyhow::bail!("the host changed:\n{diff}");
        }
        anyhow::Ok(())
    })?;

    let status = plugin.sigterm()?;
    ensure!(status.success(), "loom-bridge exit status {status}");
    let keys = runtime.block_on(async {
        let store = netloom_store::open(None, plugin.state_dir(), netloom_store::DEFAULT_PREFIX).await?;
        anyhow::Ok(store.list("bridge/").await?)
    })?;
    ensure!(keys.is_empty(), "store keys left: {:?}", keys.iter().map(|kv| &kv.key).collect::<Vec<_>>());
    Ok(())
}

#[test]
fn bridge_leaves_nothing_behind_iptables() {
    scenario("leakipt", |c| {
        let h = c.add_host(HostConfig::new("h1", DockerVersion::V20).defer_docker())?;
        leak_scenario(&h, "iptables")
    });
}

#[test]
fn bridge_leaves_nothing_behind_nftables() {
    scenario("leaknft", |c| {
        let h = c.add_host(HostConfig::new("h1", DockerVersion::V20).defer_docker())?;
        leak_scenario(&h, "nftables")
    });
}
