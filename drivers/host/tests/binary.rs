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

fn network(id: &str, options: Value) -> Value {
    json!({"NetworkID": id,
           "Options": {"com.docker.network.generic": options, "com.docker.network.enable_ipv6": false},
           "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "10.9.0.0/24", "Gateway": "10.9.0.1/24"}], "IPv6Data": []})
}

fn endpoint(net: &str, ep: &str, address: &str) -> Value {
    json!({"NetworkID": net, "EndpointID": ep, "Interface": {"Address": address}, "Options": {}})
}

fn ep_ref(net: &str, ep: &str) -> Value {
    json!({"NetworkID": net, "EndpointID": ep})
}

fn routes(ns: &ScratchNetns) -> String {
    ns.sh("ip -4 route show").unwrap()
}

fn firewall_rules(ns: &ScratchNetns) -> String {
    ns.sh("iptables-save").unwrap().lines().filter(|l| l.contains("loom-host.")).collect::<Vec<_>>().join("\n")
}

#[tokio::test]
async fn bad_requests_are_refused() {
    let ns = ScratchNetns::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let driver = start(&ns, &dir);
    let mut client = connect(&driver).await;
    let caps = client.call("NetworkDriver.GetCapabilities", &Value::Null).await.unwrap();
    assert_eq!(caps, json!({"Scope": "local", "ConnectivityScope": "local"}));
    for (method, body, expected) in [
        ("NetworkDriver.CreateNetwork", network("n", json!({"parent": "eth0"})), "unknown option(s) parent; loom-host understands"),
        ("NetworkDriver.CreateNetwork", network("n", json!({"com.docker.network.bridge.enable_ip_masquerade": "maybe"})), "is not a boolean"),
        ("NetworkDriver.CreateEndpoint", endpoint("nope", "e", "10.9.0.2/24"), "network nope is not known to loom-host"),
        ("NetworkDriver.Join", json!({"NetworkID": "n", "EndpointID": "nope", "Options": {}}), "endpoint nope is not known"),
    ] {
        let err = client.call(method, &body).await.expect_err(method).to_string();
        assert!(err.contains(expected), "{method}: {err}");
    }
    client.call("NetworkDriver.CreateNetwork", &network("n", json!({}))).await.unwrap();
    let err = client.call("NetworkDriver.CreateEndpoint", &endpoint("n", "e", "10.8.0.2/24")).await.unwrap_err().to_string();
    assert!(err.contains("address 10.8.0.2 is outside the network's subnets 10.9.0.0/24"), "{err}");
    assert_eq!(ns.links(), ["lo"], "nothing made for refused requests");
}

#[tokio::test]
async fn routes_follow_join_and_leave_and_survive_a_crash() {
    let ns = ScratchNetns::new().unwrap();
    let container = ScratchNetns::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut driver = start(&ns, &dir);
    let mut client = connect(&driver).await;

    client.call("NetworkDriver.CreateNetwork", &network("n1", json!({"com.docker.network.driver.mtu": "1400"}))).await.unwrap();
    let created = client.call("NetworkDriver.CreateEndpoint", &endpoint("n1", "e1", "10.9.0.5/24")).await.unwrap();
    assert_eq!(created, json!({"Interface": {"MacAddress": "02:42:0a:09:00:05"}}));
    let host_end = ns.sh("ip -o addr show lhe1; cat /proc/sys/net/ipv4/conf/lhe1/proxy_arp /proc/sys/net/ipv4/ip_forward").unwrap();
    for want in ["inet 169.254.1.1/32", "\n1\n1\n"] {
        assert!(host_end.contains(want), "{want:?} missing: {host_end}");
    }
    assert!(!routes(&ns).contains("10.9.0.5"), "no route before Join");

    let joined = client.call("NetworkDriver.Join", &json!({"NetworkID": "n1", "EndpointID": "e1", "SandboxKey": "x", "Options": {}})).await.unwrap();
    assert_eq!(
        joined,
        json!({"InterfaceName": {"SrcName": "lpe1", "DstPrefix": "eth"}, "Gateway": "169.254.1.1",
               "StaticRoutes": [{"Destination": "169.254.1.1/32", "RouteType": 1}]})
    );
    assert!(routes(&ns).lines().any(|r| r.starts_with("10.9.0.5 dev lhe1 ") && r.contains("scope link")), "{}", routes(&ns));
    assert!(firewall_rules(&ns).contains("-i lhe1 ! -o lhe1"), "forwarding accepted: {}", firewall_rules(&ns));

    // What Docker does with that answer, by hand: the container reaches the host and back.
    ns.sh(&format!("ip link set lpe1 netns {}", container.pid())).unwrap();
    container
        .sh("ip link set lpe1 name eth0 && ip addr add 10.9.0.5/24 dev eth0 && ip link set eth0 up && \
             ip route add 169.254.1.1/32 dev eth0 && ip route add default via 169.254.1.1")
        .unwrap();
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
    client.call("NetworkDriver.Join", &json!({"NetworkID": "n1", "EndpointID": "e2", "Options": {}})).await.unwrap();
    let mut clash = program.clone();
    clash["EndpointID"] = json!("e2");
    let err = client.call("NetworkDriver.ProgramExternalConnectivity", &clash).await.unwrap_err().to_string();
    assert!(err.contains("cannot publish port 53/udp on 0.0.0.0:5353: it is already published for endpoint e1"), "{err}");
    for (method, body) in [("NetworkDriver.Leave", ep_ref("n1", "e2")), ("NetworkDriver.DeleteEndpoint", ep_ref("n1", "e2"))] {
        client.call(method, &body).await.unwrap();
    }

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
    container.sh(&format!("ip link set eth0 down && ip link set eth0 name lpe1 && ip link set lpe1 netns {}", ns.pid())).unwrap();
    for (method, body) in [
        ("NetworkDriver.Leave", ep_ref("n1", "e1")),
        ("NetworkDriver.DeleteEndpoint", ep_ref("n1", "e1")),
        ("NetworkDriver.DeleteEndpoint", ep_ref("n1", "e1")),
        ("NetworkDriver.DeleteNetwork", json!({"NetworkID": "n1"})),
        ("NetworkDriver.DeleteNetwork", json!({"NetworkID": "n1"})),
    ] {
        client.call(method, &body).await.unwrap_or_else(|e| panic!("{method}: {e}"));
    }
    assert_eq!(ns.links(), ["lo"], "everything of the endpoint is gone");
}

#[tokio::test]
async fn ipv6_endpoints_get_a_link_local_gateway_and_internal_networks_none() {
    let ns = ScratchNetns::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let driver = start(&ns, &dir);
    let mut client = connect(&driver).await;
    let mut net = network("n6", json!({}));
    net["Options"]["com.docker.network.enable_ipv6"] = json!(true);
    net["IPv6Data"] = json!([{"AddressSpace": "LocalDefault", "Pool": "fd00:9::/64", "Gateway": "fd00:9::1/64"}]);
    client.call("NetworkDriver.CreateNetwork", &net).await.unwrap();
    let ep = json!({"NetworkID": "n6", "EndpointID": "e6", "Interface": {"Address": "10.9.0.6/24", "AddressIPv6": "fd00:9::6/64"}, "Options": {}});
    client.call("NetworkDriver.CreateEndpoint", &ep).await.unwrap();
    let joined = client.call("NetworkDriver.Join", &json!({"NetworkID": "n6", "EndpointID": "e6", "Options": {}})).await.unwrap();
    assert_eq!(
        joined,
        json!({"InterfaceName": {"SrcName": "lpe6", "DstPrefix": "eth"}, "Gateway": "169.254.1.1", "GatewayIPv6": "fe80::1",
               "StaticRoutes": [{"Destination": "169.254.1.1/32", "RouteType": 1}, {"Destination": "fe80::1/128", "RouteType": 1}]})
    );
    let host_end = ns.sh("ip -o -6 addr show lhe6; ip -6 route show dev lhe6; cat /proc/sys/net/ipv6/conf/lhe6/accept_dad").unwrap();
    for want in ["inet6 fe80::1/64", "fd00:9::6 ", "\n0\n"] {
        assert!(host_end.contains(want), "{want:?} missing: {host_end}");
    }

    let mut internal = network("ni", json!({}));
    internal["Options"]["com.docker.network.internal"] = json!(true);
    internal["IPv4Data"] = json!([{"Pool": "10.10.0.0/24", "Gateway": "10.10.0.1/24"}]);
    client.call("NetworkDriver.CreateNetwork", &internal).await.unwrap();
    client.call("NetworkDriver.CreateEndpoint", &endpoint("ni", "ei", "10.10.0.2/24")).await.unwrap();
    let joined = client.call("NetworkDriver.Join", &json!({"NetworkID": "ni", "EndpointID": "ei", "Options": {}})).await.unwrap();
    assert_eq!(
        joined,
        json!({"InterfaceName": {"SrcName": "lpei", "DstPrefix": "eth"}, "DisableGatewayService": true,
               "StaticRoutes": [{"Destination": "169.254.1.1/32", "RouteType": 1}]})
    );
}
