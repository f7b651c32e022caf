//! TCP between two endpoints of a crowded loom-bridge network: two endpoints made last (their
//! fast-path redirects the newest in the network's filter block), each container end moved into
//! a namespace of its own with its address, iperf3 between them. Measured at the smallest and
//! the largest network of the scaling section, it shows whether the per-frame work grows with
//! the endpoints a network holds (it did with one filter list: a quarter to a third less TCP at
//! 1000).

use anyhow::{anyhow, Context, Result};
use netloom_plugin_api::client::PluginClient;
use netloom_tests::Host;
use serde_json::json;

use crate::config::Config;
use crate::docker_util::{iperf3_gbits, spawn_iperf3_server, Netns, IPERF_PORT};
use crate::socket_ops::{self as ops, hex_id, Endpoint, Subnet16};
use crate::stats::Samples;

const KIND_PROBE: u16 = 0x0f;
/// Address indexes of the probe endpoints, apart from the background and the timed ones.
const PROBE_ADDRESS: u32 = 60_000;
const NAMESPACES: [&str; 2] = ["probe-cli", "probe-srv"];

/// Median Gbit/s of TCP from one new endpoint of `net` to another, over `config`'s iperf3
/// rounds; both endpoints removed again.
pub async fn tcp_between_new_endpoints(
    config: &Config,
    client: &mut PluginClient,
    host: &Host,
    net: &str,
    subnet: Subnet16,
    round: u32,
) -> Result<f64> {
    let ids: Vec<String> = (0..2).map(|i| hex_id(KIND_PROBE, round << 4 | i)).collect();
    let addresses: Vec<String> = (0..2).map(|i| subnet.address(PROBE_ADDRESS + i)).collect();
    let mut made = Vec::new();
    let measured = async {
        for (i, ns) in NAMESPACES.iter().enumerate() {
            let ep = Endpoint { net, id: &ids[i], address: &addresses[i] };
            client.call("NetworkDriver.CreateEndpoint", &ops::create_endpoint(net, ep.id, ep.address)).await?;
            made.push(i);
            let joined = client.call("NetworkDriver.Join", &ops::join(net, ep.id, &json!([]))).await?;
            let src = joined["InterfaceName"]["SrcName"]
                .as_str()
                .ok_or_else(|| anyhow!("Join answered without an interface: {joined}"))?;
            host.sh(&format!(
                "set -e
                 ip netns add {ns}
                 ip link set {src} netns {ns}
                 ip -n {ns} addr add {address} dev {src}
                 ip -n {ns} link set lo up
                 ip -n {ns} link set {src} up",
                address = ep.address
            ))?;
        }
        let server = spawn_iperf3_server(host, "iperf-probe", &Netns::Named(NAMESPACES[1].into()), IPERF_PORT)?;
        let target = addresses[1].split('/').next().unwrap_or_default();
        let mut rates = Samples::default();
        for _ in 0..config.iperf_rounds() {
            rates.push(iperf3_gbits(
                host,
                &Netns::Named(NAMESPACES[0].into()),
                target,
                IPERF_PORT,
                config.iperf_seconds(),
            )?);
        }
        drop(server);
        Ok::<f64, anyhow::Error>(rates.median())
    }
    .await;
    // Cleaned up whatever happened; the measurement's own error comes first.
    let mut removed = Ok(());
    for i in made {
        let ep = Endpoint { net, id: &ids[i], address: "" };
        if let Err(e) = ops::detach(client, &ep).await {
            removed = Err(e).context("removing a probe endpoint");
        }
    }
    for ns in NAMESPACES {
        let _ = host.exec(&["ip", "netns", "del", ns]);
    }
    let rate = measured?;
    removed.map(|()| rate)
}
