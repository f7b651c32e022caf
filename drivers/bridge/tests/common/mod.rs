//! What loom-bridge's binary tests share: the driver serving from a scratch namespace standing in
//! for the host, requests as Docker sends them, a container with a web server, a LAN neighbour.
#![allow(dead_code)]

use std::process::{Child, Stdio};

use netloom_plugin_api::client::PluginClient;
use netloom_tests::{ScratchNetns, ScratchPlugin};
use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_loom-bridge");

pub fn start(ns: &ScratchNetns, dir: &tempfile::TempDir, firewall: &str) -> ScratchPlugin {
    ns.start_plugin(BIN, dir.path(), &["--firewall", firewall]).unwrap()
}

pub async fn connect(plugin: &ScratchPlugin) -> PluginClient {
    PluginClient::connect(plugin.socket()).await.unwrap()
}

/// Sends each request in turn; every one must succeed.
pub async fn send(client: &mut PluginClient, requests: &[(&str, Value)]) {
    for (method, body) in requests {
        client.call(method, body).await.unwrap_or_else(|e| panic!("{method} {body}: {e}"));
    }
}

/// CreateNetwork of `id` with one IPv4 pool (and one IPv6 pool), gateways at `.1`/`::1`.
pub fn network(id: &str, v4: &str, v6: Option<&str>, options: Value) -> Value {
    let gateway = |pool: &str| {
        let (net, len) = pool.split_once('/').unwrap();
        format!("{}1/{len}", net.trim_end_matches('0'))
    };
    json!({"NetworkID": id,
           "Options": {"com.docker.network.generic": options, "com.docker.network.enable_ipv6": v6.is_some()},
           "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": v4, "Gateway": gateway(v4)}],
           "IPv6Data": v6.map(|p| json!([{"AddressSpace": "LocalDefault", "Pool": p, "Gateway": gateway(p)}])).unwrap_or(json!([]))})
}

/// A LAN neighbour of the host: 192.0.2.2 and 2001:db8:1::2 on `lan0`, the host's end `up0`
/// with 192.0.2.1 and 2001:db8:1::1. The neighbour has no route to container subnets, so a
/// container reaches it only when masqueraded.
pub fn lan(ns: &ScratchNetns) -> ScratchNetns {
    let lan = ScratchNetns::new().unwrap();
    ns.sh(&format!("ip link add up0 type veth peer name lan0 && ip link set lan0 netns {} && \
                    ip addr add 192.0.2.1/24 dev up0 && ip addr add 2001:db8:1::1/64 dev up0 nodad && ip link set up0 up", lan.pid()))
        .unwrap();
    lan.sh("ip addr add 192.0.2.2/24 dev lan0 && ip addr add 2001:db8:1::2/64 dev lan0 nodad && ip link set lan0 up")
        .unwrap();
    lan
}

/// What Docker does with Join's answer, by hand: the endpoint's container end `peer` moves into
/// `container` as eth0 with each (address, gateway) of `addresses`, the gateways as default routes.
pub fn plug(ns: &ScratchNetns, container: &ScratchNetns, peer: &str, addresses: &[(&str, &str)]) {
    ns.sh(&format!("ip link set {peer} netns {}", container.pid())).unwrap();
    let mut script = format!("ip link set {peer} name eth0");
    for (address, _) in addresses {
        let nodad = if address.contains(':') { " nodad" } else { "" };
        script += &format!(" && ip addr add {address} dev eth0{nodad}");
    }
    script += " && ip link set eth0 up";
    for (_, gateway) in addresses {
        script += &format!(" && ip route add default via {gateway}");
    }
    container.sh(&script).unwrap();
}

/// `busybox httpd` answering `ok` on port 80 of every address in `ns`, until dropped.
pub struct Web(Child);

impl Web {
    pub fn start(ns: &ScratchNetns, dir: &std::path::Path) -> Web {
        std::fs::write(dir.join("index.html"), "ok\n").unwrap();
        let child = ns
            .command("busybox")
            .args(["httpd", "-f", "-p", "80", "-h"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Web(child)
    }
}

impl Drop for Web {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn fetch(from: &ScratchNetns, url: &str) -> String {
    from.sh(&format!("timeout 3 busybox wget -q -O - '{url}' 2>&1 || true")).unwrap()
}

/// Whether `url` answers `ok` from `from` within about 4 s (a web server just started, rules
/// just programmed).
pub fn answers(from: &ScratchNetns, url: &str) -> bool {
    (0..20).any(|attempt| {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        fetch(from, url).contains("ok")
    })
}
