//! The loom-host binary on a real socket, in a scratch network namespace (which outlives driver
//! restarts), with a second namespace standing in for the container: errors, the veth and route
//! lifecycle, traffic between host and container, firewall policy and published ports, crash and
//! restart.

use netloom_plugin_api::client::PluginClient;
use netloom_tests::{ScratchNetns, ScratchPlugin};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_loom-host");

fn start(ns: &ScratchNetns, dir: &tempfile::TempDir) -> ScratchPlugin {
    ns.start_plugin(BIN, dir.path(), &["--firewall", "iptables"]).unwrap()
}

async fn connect(plugin: &ScratchPlugin) -> PluginClient {
    PluginClient::connect(plugin.socket()).await.unwrap()
}

/// loom-host serving from a fresh scratch namespace, its state in a fresh directory, and a client.
async fn started() -> (ScratchNetns, tempfile::TempDir, ScratchPlugin, PluginClient) {
    let ns = ScratchNetns::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let driver = start(&ns, &dir);
    let client = connect(&driver).await;
    (ns, dir, driver, client)
}

/// Sends each request in turn; every one must succeed.
async fn send(client: &mut PluginClient, requests: &[(&str, Value)]) {
    for (method, body) in requests {
        client.call(method, body).await.unwrap_or_else(|e| panic!("{method} {body}: {e}"));
    }
}

fn network(id: &str, options: Value) -> Value {
    json!({"NetworkID": id,
           "Options": {"com.docker.network.generic": options, "com.docker.network.enable_ipv6": false},
           "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "10.9.0.0/24", "Gateway": "10.9.0.1/24"}], "IPv6Data": []})
}

fn endpoint(net: &str, ep: &str, address: &str) -> Value {
    json!({"NetworkID": net, "EndpointID": ep, "Interface": {"Address": address}, "Options": {}})
}

/// A network with IPv6 enabled and `v6` as its IPv6Data.
fn dual_stack(id: &str, v6: Value) -> Value {
    let mut net = network(id, json!({}));
    net["Options"]["com.docker.network.enable_ipv6"] = json!(true);
    net["IPv6Data"] = v6;
    net
}

/// An internal network with `v4` as its IPv4Data.
fn internal(id: &str, v4: Value) -> Value {
    let mut net = network(id, json!({}));
    net["Options"]["com.docker.network.internal"] = json!(true);
    net["IPv4Data"] = v4;
    net
}

fn dual_stack_endpoint(net: &str, ep: &str, address: &str, address6: &str) -> Value {
    json!({"NetworkID": net, "EndpointID": ep, "Interface": {"Address": address, "AddressIPv6": address6}, "Options": {}})
}

fn ep_ref(net: &str, ep: &str) -> Value {
    json!({"NetworkID": net, "EndpointID": ep})
}

fn join(net: &str, ep: &str) -> Value {
    json!({"NetworkID": net, "EndpointID": ep, "Options": {}})
}

fn routes(ns: &ScratchNetns) -> String {
    ns.sh("ip -4 route show").unwrap()
}

fn firewall_rules(ns: &ScratchNetns) -> String {
    ns.sh("iptables-save").unwrap().lines().filter(|l| l.contains("loom-host.")).collect::<Vec<_>>().join("\n")
}

#[tokio::test]
async fn bad_requests_are_refused() {
    let (ns, _dir, _driver, mut client) = started().await;
    let caps = client.call("NetworkDriver.GetCapabilities", &Value::Null).await.unwrap();
    assert_eq!(caps, json!({"Scope": "local", "ConnectivityScope": "local"}));
    for (method, body, expected) in [
        (
            "NetworkDriver.CreateNetwork",
            network("n", json!({"parent": "eth0"})),
            "unknown option(s) parent; loom-host understands",
        ),
        (
            "NetworkDriver.CreateNetwork",
            network("n", json!({"com.docker.network.bridge.enable_ip_masquerade": "maybe"})),
            "is not a boolean",
        ),
        (
            "NetworkDriver.CreateEndpoint",
            endpoint("nope", "e", "10.9.0.2/24"),
            "network nope is not known to loom-host",
        ),
        ("NetworkDriver.Join", join("n", "nope"), "endpoint nope is not known"),
    ] {
        let err = client.call(method, &body).await.expect_err(method).to_string();
        assert!(err.contains(expected), "{method}: {err}");
    }
    client.call("NetworkDriver.CreateNetwork", &network("n", json!({}))).await.unwrap();
    let err =
        client.call("NetworkDriver.CreateEndpoint", &endpoint("n", "e", "10.8.0.2/24")).await.unwrap_err().to_string();
    assert!(err.contains("address 10.8.0.2 is outside the network's subnets 10.9.0.0/24"), "{err}");
    assert_eq!(ns.links(), ["lo"], "nothing made for refused requests");
}

#[tokio::test]
async fn routes_follow_join_and_leave_and_survive_a_crash() {
    let (ns, dir, mut driver, mut client) = started().await;
    let container = ScratchNetns::new().unwrap();

    client
        .call("NetworkDriver.CreateNetwork", &network("n1", json!({"com.docker.network.driver.mtu": "1400"})))
        .await
        .unwrap();
    let created = client.call("NetworkDriver.CreateEndpoint", &endpoint("n1", "e1", "10.9.0.5/24")).await.unwrap();
    assert_eq!(created, json!({"Interface": {"MacAddress": "02:42:0a:09:00:05"}}));
    let host_end = ns
        .sh("ip -o addr show lhe1; cat /proc/sys/net/ipv4/conf/lhe1/proxy_arp /proc/sys/net/ipv4/ip_forward")
        .unwrap();
    for want in ["inet 169.254.1.1/32", "\n1\n1\n"] {
        assert!(host_end.contains(want), "{want:?} missing: {host_end}");
    }
    assert!(!routes(&ns).contains("10.9.0.5"), "no route before Join");

    let joined = client
        .call("NetworkDriver.Join", &json!({"NetworkID": "n1", "EndpointID": "e1", "SandboxKey": "x", "Options": {}}))
        .await
        .unwrap();
    assert_eq!(
        joined,
        json!({"InterfaceName": {"SrcName": "lpe1", "DstPrefix": "eth"}, "Gateway": "169.254.1.1",
               "StaticRoutes": [{"Destination": "169.254.1.1/32", "RouteType": 1}]})
    );
    assert!(
        routes(&ns).lines().any(|r| r.starts_with("10.9.0.5 dev lhe1 ") && r.contains("scope link")),
        "{}",
        routes(&ns)
    );
    assert!(firewall_rules(&ns).contains("-i lhe1 ! -o lhe1"), "forwarding accepted: {}", firewall_rules(&ns));

    // What Docker does with that answer, by hand: the container reaches the host and back.
    plug(&ns, &container, "lpe1", "10.9.0.5/24");
    ns.sh("ip addr add 192.0.2.1/32 dev lo").unwrap();
    ns.sh("busybox ping -c 1 -W 2 10.9.0.5").expect("host reaches the container");
    container.sh("busybox ping -c 1 -W 2 192.0.2.1").expect("container reaches the host");

    // Published ports: DNAT rules owned by the endpoint's policy; a second claim is refused.
    let mut program = json!({"NetworkID": "n1", "EndpointID": "e1", "Options": {"com.docker.network.portmap": null}});
    client.call("NetworkDriver.ProgramExternalConnectivity", &program).await.unwrap();
    program["Options"]["com.docker.network.portmap"] =
        json!([{"Proto": 17, "IP": "", "Port": 53, "HostIP": "", "HostPort": 5353, "HostPortEnd": 5353}]);
    client.call("NetworkDriver.ProgramExternalConnectivity", &program).await.unwrap();
    client.call("NetworkDriver.ProgramExternalConnectivity", &program).await.expect("idempotent");
    let rules = firewall_rules(&ns);
    assert!(rules.lines().any(|l| l.contains("--dport 5353") && l.contains("--to-destination 10.9.0.5:53")), "{rules}");
    client.call("NetworkDriver.CreateEndpoint", &endpoint("n1", "e2", "10.9.0.6/24")).await.unwrap();
    client.call("NetworkDriver.Join", &join("n1", "e2")).await.unwrap();
    let mut clash = program.clone();
    clash["EndpointID"] = json!("e2");
    let err = client.call("NetworkDriver.ProgramExternalConnectivity", &clash).await.unwrap_err().to_string();
    assert!(
        err.contains("cannot publish port 53/udp on 0.0.0.0:5353: it is already published for endpoint e1"),
        "{err}"
    );
    send(
        &mut client,
        &[("NetworkDriver.Leave", ep_ref("n1", "e2")), ("NetworkDriver.DeleteEndpoint", ep_ref("n1", "e2"))],
    )
    .await;

    // A crash, plus a link and a firewall policy tagged as loom-host's that no record explains.
    drop(client);
    driver.kill();
    ns.sh("ip link add lhstale type veth peer name lpstale && ip link set lhstale alias netloom:host:gone:x").unwrap();
    ns.sh("iptables -A FORWARD -i lhstale -m comment --comment netloom:net=loom-host.gone -j ACCEPT").unwrap();
    driver = start(&ns, &dir);
    let mut client = connect(&driver).await;
    assert!(!ns.links().contains(&"lhstale".to_string()), "leftover link: {:?}", ns.links());
    assert!(!firewall_rules(&ns).contains("loom-host.gone"), "leftover rule: {}", firewall_rules(&ns));
    ns.sh("busybox ping -c 1 -W 2 10.9.0.5").expect("traffic goes on after the restart");
    assert!(firewall_rules(&ns).contains("--dport 5353"), "port kept: {}", firewall_rules(&ns));
    client.call("NetworkDriver.RevokeExternalConnectivity", &ep_ref("n1", "e1")).await.unwrap();
    assert!(!firewall_rules(&ns).contains("--to-destination"), "port left after Revoke: {}", firewall_rules(&ns));
    client.call("NetworkDriver.ProgramExternalConnectivity", &program).await.unwrap();

    client.call("NetworkDriver.Leave", &ep_ref("n1", "e1")).await.unwrap();
    assert!(!routes(&ns).contains("10.9.0.5"), "route left after Leave: {}", routes(&ns));
    assert_eq!(firewall_rules(&ns), "", "firewall policy left after Leave");
    container
        .sh(&format!("ip link set eth0 down && ip link set eth0 name lpe1 && ip link set lpe1 netns {}", ns.pid()))
        .unwrap();
    send(
        &mut client,
        &[
            ("NetworkDriver.Leave", ep_ref("n1", "e1")),
            ("NetworkDriver.DeleteEndpoint", ep_ref("n1", "e1")),
            ("NetworkDriver.DeleteEndpoint", ep_ref("n1", "e1")),
            ("NetworkDriver.DeleteNetwork", json!({"NetworkID": "n1"})),
            ("NetworkDriver.DeleteNetwork", json!({"NetworkID": "n1"})),
        ],
    )
    .await;
    assert_eq!(ns.links(), ["lo"], "everything of the endpoint is gone");
}

#[tokio::test]
async fn ipv6_endpoints_get_a_link_local_gateway_and_internal_networks_none() {
    let (ns, _dir, _driver, mut client) = started().await;
    let net =
        dual_stack("n6", json!([{"AddressSpace": "LocalDefault", "Pool": "fd00:9::/64", "Gateway": "fd00:9::1/64"}]));
    client.call("NetworkDriver.CreateNetwork", &net).await.unwrap();
    let ep = dual_stack_endpoint("n6", "e6", "10.9.0.6/24", "fd00:9::6/64");
    client.call("NetworkDriver.CreateEndpoint", &ep).await.unwrap();
    let joined = client.call("NetworkDriver.Join", &join("n6", "e6")).await.unwrap();
    assert_eq!(
        joined,
        json!({"InterfaceName": {"SrcName": "lpe6", "DstPrefix": "eth"}, "Gateway": "169.254.1.1", "GatewayIPv6": "fe80::1",
               "StaticRoutes": [{"Destination": "169.254.1.1/32", "RouteType": 1}, {"Destination": "fe80::1/128", "RouteType": 1}]})
    );
    let host_end = ns
        .sh("ip -o -6 addr show lhe6; ip -6 route show dev lhe6; cat /proc/sys/net/ipv6/conf/lhe6/accept_dad")
        .unwrap();
    for want in ["inet6 fe80::1/64", "fd00:9::6 ", "\n0\n"] {
        assert!(host_end.contains(want), "{want:?} missing: {host_end}");
    }

    let internal = internal("ni", json!([{"Pool": "10.10.0.0/24", "Gateway": "10.10.0.1/24"}]));
    client.call("NetworkDriver.CreateNetwork", &internal).await.unwrap();
    client.call("NetworkDriver.CreateEndpoint", &endpoint("ni", "ei", "10.10.0.2/24")).await.unwrap();
    let joined = client.call("NetworkDriver.Join", &join("ni", "ei")).await.unwrap();
    assert_eq!(
        joined,
        json!({"InterfaceName": {"SrcName": "lpei", "DstPrefix": "eth"}, "DisableGatewayService": true,
               "StaticRoutes": [{"Destination": "169.254.1.1/32", "RouteType": 1}]})
    );
}

/// Moves an endpoint's container end into `container` and configures it the way Docker would,
/// plus a default route via the gateway (as a container with NET_ADMIN could add itself).
fn plug(ns: &ScratchNetns, container: &ScratchNetns, peer: &str, address: &str) {
    ns.sh(&format!("ip link set {peer} netns {}", container.pid())).unwrap();
    container
        .sh(&format!(
            "ip link set {peer} name eth0 && ip addr add {address} dev eth0 && ip link set eth0 up && \
             ip route add 169.254.1.1/32 dev eth0 && ip route add default via 169.254.1.1"
        ))
        .unwrap();
}

/// Pings sent from `from` to `to` that got an answer, out of `count`.
fn answered(from: &ScratchNetns, to: &str, count: u32) -> u32 {
    let out = from.sh(&format!("busybox ping -c {count} -W 1 {to} 2>&1 || true")).unwrap();
    out.lines()
        .find_map(|l| l.split(" packets received").next().filter(|_| l.contains("packets received")))
        .and_then(|l| l.rsplit(", ").next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn internal_networks_route_only_among_their_own_endpoints() {
    let (ns, dir, mut driver, mut client) = started().await;
    let (c1, c2, c3, lan) = (
        ScratchNetns::new().unwrap(),
        ScratchNetns::new().unwrap(),
        ScratchNetns::new().unwrap(),
        ScratchNetns::new().unwrap(),
    );
    // A LAN neighbour of the host, which routes the container subnets to it.
    ns.sh(&format!(
        "ip link add up0 type veth peer name lan0 && ip link set lan0 netns {} && \
                    ip addr add 192.0.2.1/24 dev up0 && ip link set up0 up",
        lan.pid()
    ))
    .unwrap();
    lan.sh("ip addr add 192.0.2.2/24 dev lan0 && ip link set lan0 up && ip route add 10.0.0.0/8 via 192.0.2.1")
        .unwrap();

    let internal = internal("ni", json!([{"Pool": "10.10.0.0/24", "Gateway": "10.10.0.1/24"}]));
    client.call("NetworkDriver.CreateNetwork", &internal).await.unwrap();
    client.call("NetworkDriver.CreateNetwork", &network("nx", json!({}))).await.unwrap();
    for (net, ep, address, container) in
        [("ni", "i1", "10.10.0.2/24", &c1), ("ni", "i2", "10.10.0.3/24", &c2), ("nx", "x1", "10.9.0.2/24", &c3)]
    {
        client.call("NetworkDriver.CreateEndpoint", &endpoint(net, ep, address)).await.unwrap();
        client.call("NetworkDriver.Join", &join(net, ep)).await.unwrap();
        plug(&ns, container, &format!("lp{ep}"), address);
    }
    assert!(!routes(&ns).contains("10.10.0."), "internal endpoints in the main table: {}", routes(&ns));

    // What may pass does: the internal containers reach each other and their gateway; the
    // routed container and the LAN reach each other.
    assert_eq!(answered(&c1, "10.10.0.3", 2), 2, "internal containers cannot reach each other");
    assert_eq!(answered(&c1, "169.254.1.1", 1), 1, "internal container cannot reach its gateway");
    ns.sh("busybox ping -c 1 -W 2 10.10.0.2").expect("the host reaches an internal container");
    assert_eq!(answered(&c3, "192.0.2.2", 2), 2, "routed container cannot reach the LAN");
    assert_eq!(answered(&lan, "10.9.0.2", 2), 2, "LAN cannot reach the routed container");

    // What must not, doesn't: counted, with routes to everything in place on both sides.
    c1.sh("ip route add 10.9.0.0/24 via 169.254.1.1").unwrap();
    for (from, to, what) in [
        (&c1, "192.0.2.2", "internal container -> LAN"),
        (&c1, "10.9.0.2", "internal container -> other network's container"),
        (&lan, "10.10.0.2", "LAN -> internal container"),
        (&c3, "10.10.0.2", "other network's container -> internal container"),
    ] {
        assert_eq!(answered(from, to, 3), 0, "{what} got through");
    }

    // After a crash the rules are still there, leftovers of ours are removed, and Leave
    // and DeleteNetwork take the rules and the table away.
    drop(client);
    driver.kill();
    ns.sh("ip rule add iif lhgone lookup 1279787013 priority 1100").unwrap();
    driver = start(&ns, &dir);
    let mut client = connect(&driver).await;
    let rules = ns.sh("ip rule show; ip -6 rule show").unwrap();
    assert!(!rules.contains("lhgone"), "leftover rule kept: {rules}");
    assert_eq!(rules.matches("iif lhi1 lookup").count(), 2, "both families confined: {rules}");
    assert_eq!(answered(&c1, "10.10.0.3", 1), 1, "internal traffic after the restart");
    assert_eq!(answered(&c1, "192.0.2.2", 2), 0, "internal container -> LAN after the restart");
    for ep in ["i1", "i2"] {
        client.call("NetworkDriver.Leave", &ep_ref("ni", ep)).await.unwrap();
    }
    let rules = ns.sh("ip rule show; ip -6 rule show").unwrap();
    assert!(!rules.contains("lhi"), "rules left after Leave: {rules}");
    for ep in ["i1", "i2"] {
        client.call("NetworkDriver.DeleteEndpoint", &ep_ref("ni", ep)).await.unwrap();
    }
    client.call("NetworkDriver.DeleteNetwork", &json!({"NetworkID": "ni"})).await.unwrap();
    let tables = ns.sh("ip route show table all | grep -c unreachable || true").unwrap();
    assert_eq!(
        tables.trim(),
        "0",
        "the internal network's table is left: {}",
        ns.sh("ip route show table all").unwrap()
    );
    let rules = ns.sh("ip rule show; ip -6 rule show").unwrap();
    assert!(!rules.contains("iif lo"), "the host's rules for the table are left: {rules}");
}

#[tokio::test]
async fn overlapping_subnets_are_refused_naming_the_other() {
    let (ns, _dir, _driver, mut client) = started().await;
    client.call("NetworkDriver.CreateNetwork", &network("n1", json!({}))).await.unwrap();
    client
        .call("NetworkDriver.CreateNetwork", &network("n1", json!({})))
        .await
        .expect("the same network again is fine");
    let mut inner = network("n2", json!({}));
    inner["IPv4Data"] = json!([{"Pool": "10.9.0.128/25"}]);
    let err = client.call("NetworkDriver.CreateNetwork", &inner).await.unwrap_err().to_string();
    assert!(err.contains("subnet 10.9.0.128/25 overlaps subnet 10.9.0.0/24 of loom-host network n1"), "{err}");

    // A subnet the host already routes through an interface (a bridge, docker0, a LAN).
    ns.sh("ip link add br-lan type bridge && ip addr add 10.20.0.1/16 dev br-lan && ip link set br-lan up").unwrap();
    let mut routed = network("n3", json!({}));
    routed["IPv4Data"] = json!([{"Pool": "10.20.5.0/24"}]);
    let err = client.call("NetworkDriver.CreateNetwork", &routed).await.unwrap_err().to_string();
    assert!(err.contains("subnet 10.20.5.0/24 overlaps 10.20.0.0/16 already routed on this host through interface br-lan; one subnet serves one network per host: remove what uses br-lan"), "{err}");
    ns.sh("ip -6 addr add fd00:20::1/64 dev br-lan nodad").unwrap();
    let mut routed6 = dual_stack("n4", json!([{"Pool": "fd00:20::/64"}]));
    routed6["IPv4Data"] = json!([{"Pool": "10.30.0.0/24"}]);
    let err = client.call("NetworkDriver.CreateNetwork", &routed6).await.unwrap_err().to_string();
    assert!(
        err.contains("subnet fd00:20::/64 overlaps fd00:20::/64 already routed on this host through interface br-lan"),
        "{err}"
    );
    routed6["IPv6Data"] = json!([{"Pool": "fd00:21::/64"}]);
    client.call("NetworkDriver.CreateNetwork", &routed6).await.expect("a free subnet is fine");
}

#[tokio::test]
async fn ports_without_a_host_address_are_published_on_both_families() {
    let (ns, _dir, _driver, mut client) = started().await;
    client.call("NetworkDriver.CreateNetwork", &dual_stack("n6", json!([{"Pool": "fd00:9::/64"}]))).await.unwrap();
    let ep = dual_stack_endpoint("n6", "e6", "10.9.0.6/24", "fd00:9::6/64");
    client.call("NetworkDriver.CreateEndpoint", &ep).await.unwrap();
    client.call("NetworkDriver.Join", &join("n6", "e6")).await.unwrap();
    let program = |host_ip: &str| {
        json!({"NetworkID": "n6", "EndpointID": "e6", "Options": {"com.docker.network.portmap":
            [{"Proto": 6, "IP": "", "Port": 80, "HostIP": host_ip, "HostPort": 8088, "HostPortEnd": 8088}]}})
    };
    let dnat = |ns: &ScratchNetns| {
        ns.sh("iptables-save -t nat; ip6tables-save -t nat")
            .unwrap()
            .lines()
            .filter(|l| l.contains("-j DNAT"))
            .map(String::from)
            .collect::<Vec<_>>()
    };
    client.call("NetworkDriver.ProgramExternalConnectivity", &program("")).await.unwrap();
    let rules = dnat(&ns);
    assert!(
        rules.iter().any(|l| l.contains("--dport 8088") && l.contains("--to-destination 10.9.0.6:80")),
        "{rules:#?}"
    );
    assert!(
        rules.iter().any(|l| l.contains("--dport 8088") && l.contains("--to-destination [fd00:9::6]:80")),
        "{rules:#?}"
    );
    assert_eq!(rules.len(), 2, "{rules:#?}");
    let err = client.call("NetworkDriver.ProgramExternalConnectivity", &program("::1")).await.unwrap_err().to_string();
    assert!(err.contains("on [::1]") && err.contains("publish on 127.0.0.1"), "{err}");
    client.call("NetworkDriver.ProgramExternalConnectivity", &program("2001:db8::1")).await.unwrap();
    let rules = dnat(&ns);
    assert!(rules.iter().all(|l| !l.contains("10.9.0.6")) && rules.len() == 1, "only the IPv6 address: {rules:#?}");
    assert!(rules[0].contains("-d 2001:db8::1/128"), "{rules:#?}");
    client.call("NetworkDriver.RevokeExternalConnectivity", &ep_ref("n6", "e6")).await.unwrap();
    assert_eq!(dnat(&ns), Vec::<String>::new(), "Revoke leaves DNAT rules");

    // From a LAN neighbour, over both families, to a web server in the container.
    let (container, lan) = (ScratchNetns::new().unwrap(), ScratchNetns::new().unwrap());
    ns.sh(&format!("ip link add up0 type veth peer name lan0 && ip link set lan0 netns {} && \
                    ip addr add 192.0.2.1/24 dev up0 && ip addr add 2001:db8:1::1/64 dev up0 nodad && ip link set up0 up", lan.pid()))
        .unwrap();
    lan.sh("ip addr add 192.0.2.2/24 dev lan0 && ip addr add 2001:db8:1::2/64 dev lan0 nodad && ip link set lan0 up")
        .unwrap();
    ns.sh(&format!("ip link set lpe6 netns {}", container.pid())).unwrap();
    container
        .sh("ip link set lpe6 name eth0 && sysctl -qw net.ipv6.conf.eth0.accept_dad=0 && ip addr add 10.9.0.6/24 dev eth0 && \
             ip addr add fd00:9::6/64 dev eth0 nodad && ip link set eth0 up && ip route add 169.254.1.1/32 dev eth0 && \
             ip route add default via 169.254.1.1 && ip -6 route add default via fe80::1 dev eth0")
        .unwrap();
    let site = tempfile::tempdir().unwrap();
    std::fs::write(site.path().join("index.html"), "ok\n").unwrap();
    let mut web =
        container.command("busybox").args(["httpd", "-f", "-p", "80", "-h"]).arg(site.path()).spawn().unwrap();
    client.call("NetworkDriver.ProgramExternalConnectivity", &program("")).await.unwrap();
    let fetch =
        |url: &str| lan.sh(&format!("timeout 3 busybox wget -q -O - '{url}' 2>&1 || true")).unwrap().contains("ok");
    let mut answers = (false, false);
    for _ in 0..20 {
        answers = (fetch("http://192.0.2.1:8088/"), fetch("http://[2001:db8:1::1]:8088/"));
        if answers == (true, true) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let _ = web.kill();
    let _ = web.wait();
    assert_eq!(answers, (true, true), "(IPv4, IPv6) answers from the LAN");
}

#[tokio::test]
async fn subnets_of_loom_bridge_networks_and_the_other_way_round_are_refused() {
    let bridge_bin = std::path::Path::new(BIN).with_file_name("loom-bridge");
    assert!(bridge_bin.exists(), "build loom-bridge first (cargo build --release --workspace --bins)");
    let ns = ScratchNetns::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let nftables = ["--firewall", "nftables"];
    let _host = ns.start_named_plugin(BIN, dir.path(), "loom-host", &nftables).unwrap();
    let _bridge = ns.start_named_plugin(bridge_bin.to_str().unwrap(), dir.path(), "loom-bridge", &nftables).unwrap();
    let mut host = PluginClient::connect(dir.path().join("loom-host.sock")).await.unwrap();
    let mut bridge = PluginClient::connect(dir.path().join("loom-bridge.sock")).await.unwrap();
    let with_pool = |id: &str, pool: &str| {
        let mut net = network(id, json!({}));
        net["IPv4Data"] = json!([{"Pool": pool}]);
        net
    };

    // A loom-host network without containers has no route: loom-bridge learns of it from loom-host.
    host.call("NetworkDriver.CreateNetwork", &with_pool("hostnet1", "10.80.0.0/24")).await.unwrap();
    let err = bridge
        .call("NetworkDriver.CreateNetwork", &with_pool("bridgenet1", "10.80.0.0/24"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("subnet 10.80.0.0/24 overlaps subnet 10.80.0.0/24 of loom-host network hostnet1 on this host"),
        "{err}"
    );
    bridge.call("NetworkDriver.CreateNetwork", &with_pool("bridgenet2", "10.81.0.0/24")).await.unwrap();
    let err =
        host.call("NetworkDriver.CreateNetwork", &with_pool("hostnet2", "10.81.0.0/25")).await.unwrap_err().to_string();
    assert!(
        err.contains("overlaps subnet 10.81.0.0/24 of loom-bridge network bridgenet2 (bridge loombridgenet2)"),
        "{err}"
    );
    host.call("NetworkDriver.DeleteNetwork", &json!({"NetworkID": "hostnet1"})).await.unwrap();
    bridge
        .call("NetworkDriver.CreateNetwork", &with_pool("bridgenet1", "10.80.0.0/24"))
        .await
        .expect("free once the other is gone");
    // A driver that is down does not stop the others.
    drop(_bridge);
    host.call("NetworkDriver.CreateNetwork", &with_pool("hostnet3", "10.82.0.0/24")).await.unwrap();
}

#[tokio::test]
async fn internal_networks_recorded_before_tables_are_moved_into_one() {
    let (ns, dir, mut driver, mut client) = started().await;
    let container = ScratchNetns::new().unwrap();
    client.call("NetworkDriver.CreateNetwork", &internal("ni", json!([{"Pool": "10.10.0.0/24"}]))).await.unwrap();
    client.call("NetworkDriver.CreateEndpoint", &endpoint("ni", "i1", "10.10.0.2/24")).await.unwrap();
    client.call("NetworkDriver.Join", &join("ni", "i1")).await.unwrap();
    plug(&ns, &container, "lpi1", "10.10.0.2/24");
    drop(client);
    driver.kill();

    // What an older version left: the record without a table, the route in the main table,
    // no rules.
    let state = dir.path().join("state");
    let host_id = std::fs::read_to_string(state.join("host-id")).unwrap().trim().to_string();
    let key = format!("host/{host_id}/networks/ni");
    {
        let store = netloom_store::open(None, &state, netloom_store::DEFAULT_PREFIX).await.unwrap();
        let mut record: Value = serde_json::from_slice(&store.get(&key).await.unwrap().unwrap().value).unwrap();
        record.as_object_mut().unwrap().remove("table");
        store.put(&key, serde_json::to_vec(&record).unwrap()).await.unwrap();
    }
    ns.sh("ip rule show | grep -o 'lookup [0-9][0-9]*' | head -1 | while read _ t; do ip rule del iif lhi1 lookup $t; ip -6 rule del iif lhi1 lookup $t; done; \
           ip route add 10.10.0.2/32 dev lhi1 scope link proto static")
        .unwrap();

    driver = start(&ns, &dir);
    let _client = connect(&driver).await;
    let log = std::fs::read_to_string(dir.path().join("plugin.log")).unwrap_or_default();
    assert!(!routes(&ns).contains("10.10.0.2"), "the old main-table route stays: {}\n{log}", routes(&ns));
    let rules = ns.sh("ip rule show; ip -6 rule show").unwrap();
    assert_eq!(rules.matches("iif lhi1 lookup").count(), 2, "{rules}");
    ns.sh("busybox ping -c 1 -W 2 10.10.0.2").expect("the host still reaches the container");
    drop(driver);
    let store = netloom_store::open(None, &state, netloom_store::DEFAULT_PREFIX).await.unwrap();
    let record: Value = serde_json::from_slice(&store.get(&key).await.unwrap().unwrap().value).unwrap();
    assert!(record["table"].as_u64().is_some(), "the table is recorded: {record}");
}

/// What is left of loom-host's in `ns`: links, container routes, routing rules and tables,
/// firewall rules.
fn traces(ns: &ScratchNetns) -> (Vec<String>, String, String, String) {
    let routes = ns.sh("ip route show table all | grep -e '10\\.9\\.' -e '10\\.10\\.' -e unreachable || true").unwrap();
    let rules = ns.sh("ip rule show; ip -6 rule show").unwrap();
    let rules = rules.lines().filter(|l| l.contains("iif lh") || l.contains("iif lo")).collect::<Vec<_>>().join("\n");
    (ns.links(), routes, rules, firewall_rules(ns))
}

#[tokio::test]
async fn release_works_whatever_is_already_gone() {
    let (ns, dir, mut driver, mut client) = started().await;
    client.call("NetworkDriver.CreateNetwork", &network("n1", json!({}))).await.unwrap();
    client.call("NetworkDriver.CreateNetwork", &internal("ni", json!([{"Pool": "10.10.0.0/24"}]))).await.unwrap();
    for (net, ep, address) in [("n1", "e1", "10.9.0.5/24"), ("n1", "e2", "10.9.0.6/24"), ("ni", "i1", "10.10.0.2/24")] {
        client.call("NetworkDriver.CreateEndpoint", &endpoint(net, ep, address)).await.unwrap();
        client.call("NetworkDriver.Join", &join(net, ep)).await.unwrap();
    }
    let program = json!({"NetworkID": "n1", "EndpointID": "e1", "Options": {"com.docker.network.portmap":
        [{"Proto": 17, "IP": "", "Port": 53, "HostIP": "", "HostPort": 5353, "HostPortEnd": 5353}]}});
    client.call("NetworkDriver.ProgramExternalConnectivity", &program).await.unwrap();
    let (links, routes, rules, firewall) = traces(&ns);
    assert_eq!(links, ["lhe1", "lhe2", "lhi1", "lo", "lpe1", "lpe2", "lpi1"]);
    assert!(routes.contains("10.9.0.5 dev lhe1") && routes.contains("10.10.0.2 dev lhi1"), "{routes}");
    assert_eq!(rules.matches("iif lhi1 lookup").count(), 2, "{rules}");
    assert!(firewall.contains("--dport 5353") && firewall.contains("-i lhe2"), "{firewall}");

    // Behind the driver's back, the veths of e1 and i1 go (their routes with them).
    ns.sh("ip link del lhe1 && ip link del lhi1").unwrap();
    // What reconciliation sends for networks Docker no longer has: Leave and DeleteEndpoint,
    // then DeleteNetwork (n1 with e2 still recorded: it goes with its network).
    send(
        &mut client,
        &[
            ("NetworkDriver.Leave", ep_ref("n1", "e1")),
            ("NetworkDriver.DeleteEndpoint", ep_ref("n1", "e1")),
            ("NetworkDriver.Leave", ep_ref("ni", "i1")),
            ("NetworkDriver.DeleteEndpoint", ep_ref("ni", "i1")),
            ("NetworkDriver.DeleteNetwork", json!({"NetworkID": "n1"})),
            ("NetworkDriver.DeleteNetwork", json!({"NetworkID": "ni"})),
        ],
    )
    .await;
    let nothing = (vec!["lo".to_string()], String::new(), String::new(), String::new());
    assert_eq!(traces(&ns), nothing, "(links, routes, rules, firewall) left");
    // The records went too: a restarted driver makes nothing again and knows none of them.
    drop(client);
    driver.kill();
    driver = start(&ns, &dir);
    let mut client = connect(&driver).await;
    assert_eq!(traces(&ns), nothing, "(links, routes, rules, firewall) after a restart");
    let err = client.call("NetworkDriver.Join", &join("n1", "e2")).await.unwrap_err().to_string();
    assert!(err.contains("endpoint e2 is not known"), "{err}");
}
