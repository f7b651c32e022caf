//! loom-bridge and kernel state that changed behind its back, in a scratch namespace standing in
//! for the host: what goes missing while the driver is down (its bridge, a veth, a masquerade
//! rule, a published port) is restored at start, what is planted with its owner tags (a bridge,
//! a veth, a firewall chain or rule of a network it does not know) is removed; and the requests
//! reconciliation against Docker releases a network with (Leave, DeleteEndpoint, DeleteNetwork)
//! leave nothing behind, whatever of it was already gone.

mod common;

use common::{answers, connect, fetch, lan, network, plug, send, start, Web};
use netloom_plugin_api::client::PluginClient;
use netloom_tests::ScratchNetns;
use serde_json::{json, Value};

const BRIDGE_NAME: &str = "com.docker.network.bridge.name";

/// A network id as Docker makes them (hex): its firewall owner tag is its first 12 characters.
const GHOST: &str = "deadbeef0001";

fn endpoint(net: &str, ep: &str, address: &str) -> Value {
    json!({"NetworkID": net, "EndpointID": ep, "Interface": {"Address": address}, "Options": {}})
}

fn ep_ref(net: &str, ep: &str) -> Value {
    json!({"NetworkID": net, "EndpointID": ep})
}

/// ProgramExternalConnectivity of `-p <host_port>:80`, as Docker sends it.
fn publish(net: &str, ep: &str, host_port: u16) -> Value {
    json!({"NetworkID": net, "EndpointID": ep, "Options": {"com.docker.network.portmap":
        [{"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": host_port, "HostPortEnd": host_port}]}})
}

/// What reconciliation sends for a network Docker no longer has: Leave and DeleteEndpoint for
/// each of the `endpoints` Docker had, then DeleteNetwork.
async fn release(client: &mut PluginClient, net: &str, endpoints: &[&str]) {
    let mut requests = Vec::new();
    for ep in endpoints {
        requests.push(("NetworkDriver.Leave", ep_ref(net, ep)));
        requests.push(("NetworkDriver.DeleteEndpoint", ep_ref(net, ep)));
    }
    requests.push(("NetworkDriver.DeleteNetwork", json!({"NetworkID": net})));
    send(client, &requests).await;
}

/// The bridge `link` is attached to, if it exists.
fn master(ns: &ScratchNetns, link: &str) -> Option<String> {
    let out = ns.sh(&format!("ip -o link show dev {link} 2>/dev/null || true")).unwrap();
    let words: Vec<&str> = out.split_whitespace().collect();
    words.iter().position(|w| *w == "master").and_then(|i| words.get(i + 1)).map(|m| m.to_string())
}

fn addresses(ns: &ScratchNetns, link: &str) -> String {
    ns.sh(&format!("ip -o addr show dev {link} 2>/dev/null || true")).unwrap()
}

/// Every line of the namespace's firewall (both backends, both families) that mentions `needle`.
fn firewall_lines(ns: &ScratchNetns, needle: &str) -> Vec<String> {
    let all = ns.sh("iptables-save 2>/dev/null; ip6tables-save 2>/dev/null; nft list ruleset").unwrap();
    all.lines().filter(|l| l.contains(needle)).map(str::to_string).collect()
}

fn pings(from: &ScratchNetns, to: &str) -> bool {
    from.sh(&format!("busybox ping -c 1 -W 2 {to}")).is_ok()
}

/// How a test reads, deletes and plants a network's firewall rules, per backend.
#[derive(Clone, Copy)]
struct Rules(&'static str);

impl Rules {
    fn nft(self) -> bool {
        self.0 == "nftables"
    }

    fn listing(self, ns: &ScratchNetns) -> String {
        let script = if self.nft() { "nft list table inet netloom" } else { "iptables -t nat -S" };
        ns.sh(script).unwrap()
    }

    /// The egress masquerade of `subnet` on `bridge`.
    fn masquerade(self, ns: &ScratchNetns, subnet: &str, bridge: &str) -> bool {
        let (out_of_bridge, target) = if self.nft() {
            (format!("oifname != \"{bridge}\" ip saddr {subnet}"), "masquerade")
        } else {
            (format!("-s {subnet} ! -o {bridge}"), "-j MASQUERADE")
        };
        self.listing(ns).lines().any(|l| l.contains(&out_of_bridge) && l.contains(target))
    }

    fn port(self, ns: &ScratchNetns, host_port: u16) -> bool {
        if self.nft() {
            let map = ns.sh("nft list map inet netloom ports4").unwrap();
            map.contains(&format!("tcp . {host_port} "))
        } else {
            self.listing(ns).lines().any(|l| l.contains(&format!("--dport {host_port} ")) && l.contains("-j DNAT"))
        }
    }

    /// Deletes every masquerade rule of `subnet` (egress and hairpin) by hand.
    fn delete_masquerade(self, ns: &ScratchNetns, subnet: &str) {
        let script = if self.nft() {
            let pattern = format!("ip saddr {} masquerade", subnet.replace('/', "\\/"));
            format!(
                "nft -a list table inet netloom | awk '/^[[:space:]]*chain /{{c=$2}} /{pattern}/{{print c, $NF}}' | \
                 while read c h; do nft delete rule inet netloom \"$c\" handle \"$h\"; done"
            )
        } else {
            format!(
                "iptables -t nat -S | grep -e '-s {subnet} ' | grep -e '-j MASQUERADE' | sed 's/^-A/-D/' | \
                 while read -r rule; do eval iptables -t nat \"$rule\"; done"
            )
        };
        ns.sh(&script).unwrap();
    }

    fn delete_port(self, ns: &ScratchNetns, host_port: u16) {
        let script = if self.nft() {
            format!("nft delete element inet netloom ports4 '{{ tcp . {host_port} }}'")
        } else {
            format!(
                "iptables -t nat -S | grep -e '--dport {host_port} ' | sed 's/^-A/-D/' | \
                 while read -r rule; do eval iptables -t nat \"$rule\"; done"
            )
        };
        ns.sh(&script).unwrap();
    }

    /// Rules owned by network `id`, which the driver has no record of.
    fn plant_orphan(self, ns: &ScratchNetns, id: &str) {
        let script = if self.nft() {
            format!(
                "nft add chain inet netloom net-{id}-nat-out '{{ comment \"netloom net={id}\"; }}' && \
                 nft add rule inet netloom net-{id}-nat-out ip saddr 10.99.0.0/24 counter"
            )
        } else {
            format!(
                "iptables -t nat -A LOOM-POSTROUTING -s 10.99.0.0/24 ! -o br-ghost -m comment --comment netloom:net={id} -j MASQUERADE"
            )
        };
        ns.sh(&script).unwrap();
    }
}

async fn restart_restores_what_went_missing_and_removes_orphans(firewall: &'static str) {
    let rules = Rules(firewall);
    let ns = ScratchNetns::new().unwrap();
    let (container, lan) = (ScratchNetns::new().unwrap(), lan(&ns));
    let dir = tempfile::tempdir().unwrap();
    let mut driver = start(&ns, &dir, firewall);
    let mut client = connect(&driver).await;
    let url = "http://192.0.2.1:8081/";

    client
        .call("NetworkDriver.CreateNetwork", &network("r1", "10.70.0.0/24", None, json!({BRIDGE_NAME: "br-r1"})))
        .await
        .unwrap();
    // e1: a running container with a web server, published on port 8081.
    client.call("NetworkDriver.CreateEndpoint", &endpoint("r1", "e1", "10.70.0.2/24")).await.unwrap();
    client.call("NetworkDriver.Join", &json!({"NetworkID": "r1", "EndpointID": "e1", "Options": {}})).await.unwrap();
    plug(&ns, &container, "vpe1", &[("10.70.0.2/24", "10.70.0.1")]);
    let site = tempfile::tempdir().unwrap();
    let _web = Web::start(&container, site.path());
    client.call("NetworkDriver.ProgramExternalConnectivity", &publish("r1", "e1", 8081)).await.unwrap();
    // e2: created, not joined yet: both ends of its pair are on the host.
    client.call("NetworkDriver.CreateEndpoint", &endpoint("r1", "e2", "10.70.0.3/24")).await.unwrap();

    assert!(addresses(&ns, "br-r1").contains("10.70.0.1/24"), "{firewall}: the bridge and its gateway");
    for veth in ["vle1", "vle2"] {
        assert_eq!(master(&ns, veth).as_deref(), Some("br-r1"), "{firewall}: {veth} on the bridge");
    }
    assert!(rules.masquerade(&ns, "10.70.0.0/24", "br-r1"), "{firewall}: masquerade: {}", rules.listing(&ns));
    assert!(rules.port(&ns, 8081), "{firewall}: published port: {}", rules.listing(&ns));
    assert!(answers(&lan, url), "{firewall}: the published port answers from the LAN");
    assert!(pings(&container, "192.0.2.2"), "{firewall}: the container reaches the LAN (masqueraded)");

    // While the driver is down: its bridge, e2's veth, the masquerade and the port go, and
    // a bridge, a veth and firewall rules tagged with a network it never had appear.
    drop(client);
    driver.kill();
    ns.sh("ip link del br-r1 && ip link del vle2").unwrap();
    rules.delete_masquerade(&ns, "10.70.0.0/24");
    rules.delete_port(&ns, 8081);
    ns.sh(&format!(
        "ip link add br-ghost type bridge && ip link set br-ghost alias netloom:bridge:{GHOST} && \
         ip link add vlghost type veth peer name vpghost && ip link set vlghost alias netloom:bridge:{GHOST}:e9 && \
         ip link set vlghost master br-ghost"
    ))
    .unwrap();
    rules.plant_orphan(&ns, GHOST);
    let links = ns.links();
    for gone in ["br-r1", "vle2", "vpe2"] {
        assert!(!links.contains(&gone.to_string()), "{firewall}: {gone} still there: {links:?}");
    }
    for planted in ["br-ghost", "vlghost"] {
        assert!(links.contains(&planted.to_string()), "{firewall}: {planted} not planted: {links:?}");
    }
    assert!(!rules.masquerade(&ns, "10.70.0.0/24", "br-r1"), "{firewall}: masquerade not deleted");
    assert!(!rules.port(&ns, 8081), "{firewall}: port not deleted: {}", rules.listing(&ns));
    assert!(!fetch(&lan, url).contains("ok"), "{firewall}: the port answers with the driver down");
    assert!(!firewall_lines(&ns, GHOST).is_empty(), "{firewall}: orphan rule not planted");

    driver = start(&ns, &dir, firewall);
    let mut client = connect(&driver).await;
    let log = || std::fs::read_to_string(dir.path().join("plugin.log")).unwrap_or_default();
    assert!(addresses(&ns, "br-r1").contains("10.70.0.1/24"), "{firewall}: bridge not restored:\n{}", log());
    for veth in ["vle1", "vle2"] {
        assert_eq!(
            master(&ns, veth).as_deref(),
            Some("br-r1"),
            "{firewall}: {veth} not back on the bridge:\n{}",
            log()
        );
    }
    assert!(ns.links().contains(&"vpe2".to_string()), "{firewall}: e2's pair is whole again, ready for Join");
    assert!(rules.masquerade(&ns, "10.70.0.0/24", "br-r1"), "{firewall}: masquerade not restored");
    assert!(rules.port(&ns, 8081), "{firewall}: port not restored: {}", rules.listing(&ns));
    assert!(answers(&lan, url), "{firewall}: the published port answers again");
    assert!(pings(&container, "192.0.2.2"), "{firewall}: the container reaches the LAN again");
    let links = ns.links();
    assert!(!links.iter().any(|l| l.contains("ghost")), "{firewall}: orphan links kept: {links:?}");
    assert_eq!(firewall_lines(&ns, GHOST), Vec::<String>::new(), "{firewall}: orphan rules kept");

    // Docker no longer has the network: e2, still recorded, goes with it, and no Revoke comes first.
    release(&mut client, "r1", &["e1"]).await;
    nothing_left(&ns, &["lo", "up0"], &["br-r1", "10.70.0."], firewall);
    drop(client);
    driver.kill();
    let _driver = start(&ns, &dir, firewall);
    nothing_left(&ns, &["lo", "up0"], &["br-r1", "10.70.0."], &format!("{firewall}, after a restart"));
}

/// Only `links` are left, and no firewall line mentions any of `traces`.
fn nothing_left(ns: &ScratchNetns, links: &[&str], traces: &[&str], case: &str) {
    assert_eq!(ns.links(), links, "{case}: links left");
    for trace in traces {
        assert_eq!(firewall_lines(ns, trace), Vec::<String>::new(), "{case}: firewall lines with {trace} left");
    }
}

#[tokio::test]
async fn restart_restores_what_went_missing_and_removes_orphans_with_iptables() {
    restart_restores_what_went_missing_and_removes_orphans("iptables").await;
}

#[tokio::test]
async fn restart_restores_what_went_missing_and_removes_orphans_with_nftables() {
    restart_restores_what_went_missing_and_removes_orphans("nftables").await;
}

/// Leave, DeleteEndpoint and DeleteNetwork succeed and leave nothing (links, addresses, rules,
/// records) when the bridge, a veth and a published port's rule are already gone.
async fn release_works_whatever_is_already_gone(firewall: &'static str) {
    let rules = Rules(firewall);
    let ns = ScratchNetns::new().unwrap();
    let container = ScratchNetns::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut driver = start(&ns, &dir, firewall);
    let mut client = connect(&driver).await;
    client
        .call("NetworkDriver.CreateNetwork", &network("r2", "10.71.0.0/24", None, json!({BRIDGE_NAME: "br-r2"})))
        .await
        .unwrap();
    for (ep, address) in [("e1", "10.71.0.2/24"), ("e2", "10.71.0.3/24")] {
        client.call("NetworkDriver.CreateEndpoint", &endpoint("r2", ep, address)).await.unwrap();
        client.call("NetworkDriver.Join", &json!({"NetworkID": "r2", "EndpointID": ep, "Options": {}})).await.unwrap();
    }
    client.call("NetworkDriver.ProgramExternalConnectivity", &publish("r2", "e2", 8083)).await.unwrap();
    plug(&ns, &container, "vpe1", &[("10.71.0.2/24", "10.71.0.1")]);
    client.call("NetworkDriver.ProgramExternalConnectivity", &publish("r2", "e1", 8082)).await.unwrap();
    assert!(rules.port(&ns, 8082) && rules.port(&ns, 8083), "{firewall}: ports: {}", rules.listing(&ns));
    assert!(rules.masquerade(&ns, "10.71.0.0/24", "br-r2"), "{firewall}: masquerade");
    assert!(pings(&container, "10.71.0.1"), "{firewall}: the container reaches its gateway");

    // Behind the driver's back: the bridge, e1's veth (and so the container's interface) and
    // e2's port rule go.
    ns.sh("ip link del br-r2 && ip link del vle1").unwrap();
    rules.delete_port(&ns, 8083);
    assert!(!rules.port(&ns, 8083), "{firewall}: port not deleted");
    assert_eq!(ns.links(), ["lo", "vle2", "vpe2"], "{firewall}: deleted by hand");
    // Docker no longer has the network: e2, still recorded, goes with it.
    release(&mut client, "r2", &["e1"]).await;
    nothing_left(&ns, &["lo"], &["br-r2", "10.71.0."], firewall);
    // The records went too: a restarted driver makes nothing again and knows neither.
    drop(client);
    driver.kill();
    driver = start(&ns, &dir, firewall);
    let mut client = connect(&driver).await;
    nothing_left(&ns, &["lo"], &["br-r2", "10.71.0."], &format!("{firewall}, after a restart"));
    let err = client.call("NetworkDriver.Join", &json!({"NetworkID": "r2", "EndpointID": "e2", "Options": {}})).await;
    assert!(err.unwrap_err().to_string().contains("endpoint e2 is not known"), "{firewall}: e2 still recorded");
}

#[tokio::test]
async fn release_works_whatever_is_already_gone_with_iptables() {
    release_works_whatever_is_already_gone("iptables").await;
}

#[tokio::test]
async fn release_works_whatever_is_already_gone_with_nftables() {
    release_works_whatever_is_already_gone("nftables").await;
}
