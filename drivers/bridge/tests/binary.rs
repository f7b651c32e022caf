//! The loom-bridge binary on a real socket, in a scratch network namespace standing in for the
//! host, with more namespaces for a container and a LAN neighbour: subnets that overlap another
//! network or a route of the host, and ports published over IPv4 and IPv6 at once.

mod common;

use common::{connect, fetch, lan, network, plug, send, start, Web};
use netloom_tests::ScratchNetns;
use serde_json::json;

#[tokio::test]
async fn overlapping_subnets_are_refused_naming_the_other() {
    let ns = ScratchNetns::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let driver = start(&ns, &dir, "nftables");
    let mut client = connect(&driver).await;
    let first = network("n1", "10.40.0.0/24", Some("fd00:40::/64"), json!({"com.docker.network.bridge.name": "web0"}));
    client.call("NetworkDriver.CreateNetwork", &first).await.unwrap();
    client.call("NetworkDriver.CreateNetwork", &first).await.expect("the same network again is fine");
    for (second, expected) in [
        (
            network("n2", "10.40.0.0/24", None, json!({})),
            "subnet 10.40.0.0/24 overlaps subnet 10.40.0.0/24 of loom-bridge network n1 (bridge web0)",
        ),
        (
            network("n2", "10.40.0.0/16", None, json!({})),
            "subnet 10.40.0.0/16 overlaps subnet 10.40.0.0/24 of loom-bridge network n1 (bridge web0)",
        ),
        (
            network("n2", "10.41.0.0/24", Some("fd00:40::/56"), json!({})),
            "subnet fd00:40::/56 overlaps subnet fd00:40::/64 of loom-bridge network n1",
        ),
    ] {
        let err = client.call("NetworkDriver.CreateNetwork", &second).await.unwrap_err().to_string();
        assert!(err.contains(expected) && err.contains("choose another --subnet"), "{err}");
    }
    // Routes of the host: a connected subnet (docker0, a LAN) and a host route (a loom-host
    // container) through interfaces that are not netloom's bridges.
    ns.sh("ip link add docker0 type bridge && ip addr add 172.17.0.1/16 dev docker0 && ip link set docker0 up && \
           ip link add lhc1 type veth peer name lhc1p && ip link set lhc1 alias netloom:host:hostnet1:ep1 && ip link set lhc1 up && \
           ip route add 10.50.0.7/32 dev lhc1")
        .unwrap();
    for (second, expected) in [
        (network("n3", "172.17.5.0/24", None, json!({})), "subnet 172.17.5.0/24 overlaps 172.17.0.0/16 already routed on this host through interface docker0 (Docker's default bridge network); one subnet serves one network per host: remove what uses docker0"),
        (network("n3", "10.50.0.0/24", None, json!({})), "subnet 10.50.0.0/24 overlaps 10.50.0.7/32 already routed on this host through interface lhc1 (loom-host network hostnet1)"),
    ] {
        let err = client.call("NetworkDriver.CreateNetwork", &second).await.unwrap_err().to_string();
        assert!(err.contains(expected), "{err}");
    }
    let links = ns.links();
    assert_eq!(links, ["docker0", "lhc1", "lhc1p", "lo", "web0"], "nothing made for refused networks");
    client
        .call("NetworkDriver.CreateNetwork", &network("n3", "10.51.0.0/24", None, json!({})))
        .await
        .expect("a free subnet");
    for id in ["n1", "n3"] {
        client.call("NetworkDriver.DeleteNetwork", &json!({"NetworkID": id})).await.unwrap();
    }
    client
        .call("NetworkDriver.CreateNetwork", &network("n2", "10.40.0.0/24", None, json!({})))
        .await
        .expect("free again after removal");
}

async fn publish_on_both_families(firewall: &str) {
    let ns = ScratchNetns::new().unwrap();
    let (container, lan) = (ScratchNetns::new().unwrap(), lan(&ns));
    let dir = tempfile::tempdir().unwrap();
    let driver = start(&ns, &dir, firewall);
    let mut client = connect(&driver).await;

    client
        .call("NetworkDriver.CreateNetwork", &network("n6", "10.60.0.0/24", Some("fd00:60::/64"), json!({})))
        .await
        .unwrap();
    let ep = json!({"NetworkID": "n6", "EndpointID": "e6", "Interface": {"Address": "10.60.0.2/24", "AddressIPv6": "fd00:60::2/64"}, "Options": {}});
    client.call("NetworkDriver.CreateEndpoint", &ep).await.unwrap();
    client.call("NetworkDriver.Join", &json!({"NetworkID": "n6", "EndpointID": "e6", "Options": {}})).await.unwrap();
    plug(&ns, &container, "vpe6", &[("10.60.0.2/24", "10.60.0.1"), ("fd00:60::2/64", "fd00:60::1")]);
    let site = tempfile::tempdir().unwrap();
    let _web = Web::start(&container, site.path());

    // As Docker 20.10 and 26 send `-p 8088:80`: one binding, HostIP "".
    let program = json!({"NetworkID": "n6", "EndpointID": "e6", "Options": {"com.docker.network.portmap":
        [{"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8088, "HostPortEnd": 8088}]}});
    client.call("NetworkDriver.ProgramExternalConnectivity", &program).await.unwrap();
    let mut answers = (0, 0);
    for _ in 0..20 {
        answers = (
            fetch(&lan, "http://192.0.2.1:8088/").contains("ok") as u32,
            fetch(&lan, "http://[2001:db8:1::1]:8088/").contains("ok") as u32,
        );
        if answers == (1, 1) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    if answers != (1, 1) {
        eprintln!("direct: {}", fetch(&ns, "http://10.60.0.2/"));
        eprintln!("{}", ns.sh("iptables-save; ip6tables-save; nft list ruleset; ip addr; ip route; ip -6 route; sysctl net.ipv4.ip_forward net.ipv6.conf.all.forwarding").unwrap_or_default());
        eprintln!(
            "{}",
            container
                .sh("ip addr; ip route; ip -6 route; netstat -ltn 2>/dev/null || busybox netstat -ltn")
                .unwrap_or_default()
        );
    }
    assert_eq!(answers, (1, 1), "{firewall}: (IPv4, IPv6) answers from the LAN");

    // Revoke takes both away; a restart of the driver brings both back after a new Program.
    client
        .call("NetworkDriver.RevokeExternalConnectivity", &json!({"NetworkID": "n6", "EndpointID": "e6"}))
        .await
        .unwrap();
    assert!(!fetch(&lan, "http://192.0.2.1:8088/").contains("ok"), "{firewall}: IPv4 still published after Revoke");
    assert!(
        !fetch(&lan, "http://[2001:db8:1::1]:8088/").contains("ok"),
        "{firewall}: IPv6 still published after Revoke"
    );
    client.call("NetworkDriver.ProgramExternalConnectivity", &program).await.unwrap();
    drop(client);
    let mut driver = driver;
    driver.kill();
    let driver = start(&ns, &dir, firewall);
    let mut client = connect(&driver).await;
    assert!(fetch(&lan, "http://[2001:db8:1::1]:8088/").contains("ok"), "{firewall}: IPv6 port lost over a restart");
    assert!(fetch(&lan, "http://192.0.2.1:8088/").contains("ok"), "{firewall}: IPv4 port lost over a restart");
    send(
        &mut client,
        &[
            ("NetworkDriver.RevokeExternalConnectivity", json!({"NetworkID": "n6", "EndpointID": "e6"})),
            ("NetworkDriver.DeleteEndpoint", json!({"NetworkID": "n6", "EndpointID": "e6"})),
            ("NetworkDriver.DeleteNetwork", json!({"NetworkID": "n6"})),
        ],
    )
    .await;
}

#[tokio::test]
async fn ports_are_published_on_both_families_with_iptables() {
    publish_on_both_families("iptables").await;
}

#[tokio::test]
async fn ports_are_published_on_both_families_with_nftables() {
    publish_on_both_families("nftables").await;
}
