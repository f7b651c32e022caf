//! The loom-macvlan binary on a real socket, in a scratch network namespace (which outlives
//! driver restarts): option and parent errors leave nothing behind, the link lifecycle, published
//! ports refused, crash and restart.

use netloom_plugin_api::client::PluginClient;
use netloom_tests::{ScratchNetns, ScratchPlugin};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_loom-macvlan");

/// A scratch namespace with a veth pair p0/p1 (both up) to use as parent.
fn netns() -> ScratchNetns {
    let ns = ScratchNetns::new().unwrap();
    ns.sh("ip link add p0 type veth peer name p1 && ip link set p0 up && ip link set p1 up").unwrap();
    ns
}

fn start(ns: &ScratchNetns, dir: &tempfile::TempDir) -> ScratchPlugin {
    ns.start_plugin(BIN, dir.path(), &[]).unwrap()
}

async fn connect(plugin: &ScratchPlugin) -> PluginClient {
    PluginClient::connect(plugin.socket()).await.unwrap()
}

/// Sends each request in turn; every one must succeed.
async fn send(client: &mut PluginClient, requests: &[(&str, Value)]) {
    for (method, body) in requests {
        client.call(method, body).await.unwrap_or_else(|e| panic!("{method} {body}: {e}"));
    }
}

fn network(id: &str, options: Value, internal: bool) -> Value {
    let mut top = json!({"com.docker.network.generic": options, "com.docker.network.enable_ipv6": false});
    if internal {
        top["com.docker.network.internal"] = json!(true);
    }
    json!({"NetworkID": id, "Options": top,
           "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "10.9.0.0/24", "Gateway": "10.9.0.1/24"}], "IPv6Data": []})
}

fn endpoint(net: &str, ep: &str, address: &str) -> Value {
    json!({"NetworkID": net, "EndpointID": ep, "Interface": {"Address": address}, "Options": {}})
}

fn join(net: &str, ep: &str) -> Value {
    json!({"NetworkID": net, "EndpointID": ep, "SandboxKey": "/var/run/docker/netns/x",
           "Options": {"com.docker.network.portmap": [], "com.docker.network.endpoint.exposedports": []}})
}

async fn err_of(client: &mut PluginClient, method: &str, body: &Value) -> String {
    client.call(method, body).await.expect_err(&format!("{method} {body} succeeded")).to_string()
}

#[tokio::test]
async fn bad_options_and_parents_are_refused_with_nothing_made() {
    let ns = netns();
    ns.sh("ip link add q0 type veth peer name q1 && ip link add link p0 name mvx type macvlan && ip link set mvx up")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let driver = start(&ns, &dir);
    let mut client = connect(&driver).await;
    let caps = client.call("NetworkDriver.GetCapabilities", &Value::Null).await.unwrap();
    assert_eq!(caps, json!({"Scope": "local", "ConnectivityScope": "global"}));

    let before = ns.links();
    for (options, expected) in [
        (json!({"parent": "eth9"}), "parent interface eth9 does not exist on this host"),
        (json!({"parent": "q0"}), "parent interface q0 is down"),
        (json!({"parent": "mvx"}), "parent interface mvx is itself a macvlan link"),
        (json!({"parent": "p0.5000"}), "parent=p0.5000: VLAN id 5000 is out of range; use 1 to 4094"),
        (json!({"parent": "eth9.50"}), "interface eth9 (base of the VLAN sub-interface eth9.50) does not exist"),
        (json!({"parent": "p0.50"}), "no 802.1q VLAN support"),
        (json!({"parent": "p0", "macvlan_mode": "l3"}), "macvlan_mode=\"l3\" is not a macvlan mode"),
        (json!({"parent": "p0", "vlan": "5"}), "unknown option(s) vlan"),
        (
            json!({"parent": "p0", "com.docker.network.driver.mtu": "9000"}),
            "larger than the MTU 1500 of parent interface p0",
        ),
        (json!({"parent": "lo"}), "loopback"),
    ] {
        let vlan_case = options["parent"] == "p0.50";
        let err = client.call("NetworkDriver.CreateNetwork", &network("bad", options.clone(), false)).await;
        match err {
            // A kernel with 8021q makes the sub-interface; take it away again.
            Ok(_) if vlan_case => {
                assert!(ns.links().contains(&"p0.50".to_string()));
                client.call("NetworkDriver.DeleteNetwork", &json!({"NetworkID": "bad"})).await.unwrap();
            }
            Ok(_) => panic!("{options} was accepted"),
            Err(e) => assert!(e.to_string().contains(expected), "{options}: {e}"),
        }
        assert_eq!(ns.links(), before, "{options} left links behind");
    }
    // Nothing was recorded either: the same id now works, and a passthru network wants p0 alone.
    client.call("NetworkDriver.CreateNetwork", &network("bad", json!({"parent": "p0"}), false)).await.unwrap();
    let err = err_of(
        &mut client,
        "NetworkDriver.CreateNetwork",
        &network("pt", json!({"parent": "p0", "macvlan_mode": "passthru"}), false),
    )
    .await;
    assert!(err.contains("parent interface p0 is already used by network bad"), "{err}");
    let err = err_of(&mut client, "NetworkDriver.CreateEndpoint", &endpoint("bad", "e1", "10.7.0.2/24")).await;
    assert!(err.contains("address 10.7.0.2 is outside the network's subnets 10.9.0.0/24"), "{err}");
}

#[tokio::test]
async fn endpoint_links_come_and_go_and_survive_a_crash() {
    let ns = netns();
    let dir = tempfile::tempdir().unwrap();
    let mut driver = start(&ns, &dir);
    let mut client = connect(&driver).await;

    client
        .call(
            "NetworkDriver.CreateNetwork",
            &network(
                "n1",
                json!({"parent": "p0", "macvlan_mode": "private", "com.docker.network.driver.mtu": "1400"}),
                false,
            ),
        )
        .await
        .unwrap();
    client
        .call("NetworkDriver.CreateNetwork", &network("n1", json!({"parent": "p0"}), false))
        .await
        .expect("idempotent");
    client.call("NetworkDriver.CreateNetwork", &network("n2", json!({}), true)).await.unwrap();
    assert!(ns.links().contains(&"dm-n2".to_string()), "isolated parent: {:?}", ns.links());

    let created = client.call("NetworkDriver.CreateEndpoint", &endpoint("n1", "e1", "10.9.0.5/24")).await.unwrap();
    assert_eq!(created, json!({"Interface": {"MacAddress": "02:42:0a:09:00:05"}}));
    let joined = client.call("NetworkDriver.Join", &join("n1", "e1")).await.unwrap();
    assert_eq!(joined, json!({"InterfaceName": {"SrcName": "mve1", "DstPrefix": "eth"}, "Gateway": "10.9.0.1"}));
    client.call("NetworkDriver.Join", &join("n1", "e1")).await.expect("Join is idempotent");
    let link = ns.sh("ip -d -o link show mve1").unwrap();
    for want in ["mtu 1400", "02:42:0a:09:00:05", "macvlan mode private", "mve1@p0", "alias netloom:macvlan:n1:e1"] {
        assert!(link.contains(want), "{want} missing: {link}");
    }

    // Published ports are refused, an empty port map is fine.
    let mut program = json!({"NetworkID": "n1", "EndpointID": "e1", "Options": {"com.docker.network.portmap": []}});
    client.call("NetworkDriver.ProgramExternalConnectivity", &program).await.unwrap();
    program["Options"]["com.docker.network.portmap"] =
        json!([{"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080}]);
    let err = err_of(&mut client, "NetworkDriver.ProgramExternalConnectivity", &program).await;
    assert!(err.contains("loom-macvlan cannot publish ports (asked for 80/tcp)"), "{err}");

    // The internal network: no gateway, so no default route in the container, and no
    // docker_gwbridge either.
    client.call("NetworkDriver.CreateEndpoint", &endpoint("n2", "e2", "10.9.0.6/24")).await.unwrap();
    let joined = client.call("NetworkDriver.Join", &join("n2", "e2")).await.unwrap();
    assert_eq!(
        joined,
        json!({"InterfaceName": {"SrcName": "mve2", "DstPrefix": "eth"}, "DisableGatewayService": true})
    );
    assert!(ns.sh("ip -o link show mve2").unwrap().contains("mve2@dm-n2"));
    // An internal network never sits on a real segment: like Docker's macvlan, it ignores
    // parent= and gets an isolated parent of its own.
    client.call("NetworkDriver.CreateNetwork", &network("n3", json!({"parent": "p0"}), true)).await.unwrap();
    client.call("NetworkDriver.CreateEndpoint", &endpoint("n3", "e3", "10.9.0.7/24")).await.unwrap();
    let joined = client.call("NetworkDriver.Join", &join("n3", "e3")).await.unwrap();
    assert_eq!(
        joined,
        json!({"InterfaceName": {"SrcName": "mve3", "DstPrefix": "eth"}, "DisableGatewayService": true})
    );
    let link = ns.sh("ip -o link show mve3").unwrap();
    assert!(link.contains("mve3@dm-n3"), "internal endpoint on the user's parent: {link}");
    send(
        &mut client,
        &[
            ("NetworkDriver.DeleteEndpoint", json!({"NetworkID": "n3", "EndpointID": "e3"})),
            ("NetworkDriver.DeleteNetwork", json!({"NetworkID": "n3"})),
        ],
    )
    .await;
    assert!(!ns.links().iter().any(|l| l.ends_with("n3") || l == "mve3"), "{:?}", ns.links());

    // A crash, plus a link tagged as ours that no record explains.
    drop(client);
    driver.kill();
    ns.sh("ip link add link p0 name mvstale type macvlan && ip link set mvstale alias netloom:macvlan:gone:x").unwrap();
    driver = start(&ns, &dir);
    let mut client = connect(&driver).await;
    let links = ns.links();
    assert!(!links.contains(&"mvstale".to_string()), "leftover not removed: {links:?}");
    assert!(links.contains(&"mve1".to_string()) && links.contains(&"dm-n2".to_string()), "{links:?}");

    send(
        &mut client,
        &[
            ("NetworkDriver.Leave", json!({"NetworkID": "n1", "EndpointID": "e1"})),
            ("NetworkDriver.DeleteEndpoint", json!({"NetworkID": "n1", "EndpointID": "e1"})),
            ("NetworkDriver.DeleteEndpoint", json!({"NetworkID": "n1", "EndpointID": "e1"})),
            ("NetworkDriver.DeleteNetwork", json!({"NetworkID": "n1"})),
            ("NetworkDriver.DeleteNetwork", json!({"NetworkID": "n2"})),
            ("NetworkDriver.DeleteNetwork", json!({"NetworkID": "n2"})),
        ],
    )
    .await;
    assert_eq!(ns.links(), ["lo", "p0", "p1"], "the user's parent stays, everything else is gone");
}

#[tokio::test]
async fn release_works_whatever_is_already_gone() {
    let ns = netns();
    let dir = tempfile::tempdir().unwrap();
    let mut driver = start(&ns, &dir);
    let mut client = connect(&driver).await;
    client.call("NetworkDriver.CreateNetwork", &network("n1", json!({"parent": "p0"}), false)).await.unwrap();
    client.call("NetworkDriver.CreateNetwork", &network("n2", json!({}), false)).await.unwrap();
    for (net, ep, address) in [("n1", "e1", "10.9.0.5/24"), ("n2", "e2", "10.9.0.6/24"), ("n2", "e3", "10.9.0.7/24")] {
        client.call("NetworkDriver.CreateEndpoint", &endpoint(net, ep, address)).await.unwrap();
        client.call("NetworkDriver.Join", &join(net, ep)).await.unwrap();
    }
    assert_eq!(ns.links(), ["dm-n2", "dp-n2", "lo", "mve1", "mve2", "mve3", "p0", "p1"]);

    // Behind the driver's back, e1's macvlan goes, and n2's isolated parent with every macvlan on it.
    ns.sh("ip link del mve1 && ip link del dm-n2").unwrap();
    assert_eq!(ns.links(), ["lo", "p0", "p1"]);
    // What reconciliation sends for networks Docker no longer has: Leave and DeleteEndpoint,
    // then DeleteNetwork (n2 with e3 still recorded: it goes with its network).
    send(
        &mut client,
        &[
            ("NetworkDriver.Leave", json!({"NetworkID": "n1", "EndpointID": "e1"})),
            ("NetworkDriver.DeleteEndpoint", json!({"NetworkID": "n1", "EndpointID": "e1"})),
            ("NetworkDriver.Leave", json!({"NetworkID": "n2", "EndpointID": "e2"})),
            ("NetworkDriver.DeleteEndpoint", json!({"NetworkID": "n2", "EndpointID": "e2"})),
            ("NetworkDriver.DeleteNetwork", json!({"NetworkID": "n1"})),
            ("NetworkDriver.DeleteNetwork", json!({"NetworkID": "n2"})),
        ],
    )
    .await;
    // The records went too: a restarted driver makes no parent again and knows none of them.
    drop(client);
    driver.kill();
    driver = start(&ns, &dir);
    let mut client = connect(&driver).await;
    assert_eq!(ns.links(), ["lo", "p0", "p1"], "after a restart");
    let err = err_of(&mut client, "NetworkDriver.Join", &join("n2", "e3")).await;
    assert!(err.contains("endpoint e3 is not known"), "{err}");
}
