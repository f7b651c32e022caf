//! Both backends in a lab of network namespaces, next to Docker-like iptables rules (FORWARD
//! policy DROP, DOCKER-USER / DOCKER-ISOLATION chains, a docker0 bridge with a container) and
//! with br_netfilter's bridge-nf-call-iptables on. Needs root; fails (never skips) otherwise.
//!
//! Addresses (all inside the lab): uplink 198.18.0.0/24 (host .1, client .2), network A on
//! loomA 198.18.1.0/24 (c1 .2, c2 .3), network B on loomB 198.18.2.0/24 (c3 .2), internal
//! network C on loomC 198.18.3.0/24 (c4 .2), docker0 198.18.4.0/24 (d1 .2).

mod common;

use common::{policy, probes, rules_of, snapshot, tcp, Fw, Lab, Server, EP1, NET_A};
use netloom_firewall::{BackendKind, FirewallError, NetworkPolicy, PortMapping};

const NET_B: &str = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0";
const NET_C: &str = "c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0";
const NET_Z: &str = "f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0";
const EP2: &str = "e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2";

/// The lab with networks A, B and internal C as the bridge driver would have them, next to
/// Docker's rules (a real dockerd, or the same rules written by hand).
fn lab(real_dockerd: bool) -> Lab {
    let mut lab = Lab::new();
    if real_dockerd {
        lab.real_dockerd("198.18.4.1/24", "198.18.4.2/24");
    } else {
        lab.dockerlike("198.18.4.0/24", "198.18.4.1/24", "198.18.4.2/24");
    }
    lab.bridge("loomA", "198.18.1.1/24");
    lab.bridge("loomB", "198.18.2.1/24");
    lab.bridge("loomC", "198.18.3.1/24");
    lab.container("c1", "loomA", "198.18.1.2/24", "198.18.1.1");
    lab.container("c2", "loomA", "198.18.1.3/24", "198.18.1.1");
    lab.container("c3", "loomB", "198.18.2.2/24", "198.18.2.1");
    lab.container("c4", "loomC", "198.18.3.2/24", "198.18.3.1");
    lab
}

fn add(fw: &Fw, p: &NetworkPolicy) {
    let p = p.clone();
    fw.call(move |fw| Box::pin(async move { fw.add_network(&p).await })).expect("add_network");
}

fn remove(fw: &Fw, p: &NetworkPolicy) {
    let p = p.clone();
    fw.call(move |fw| Box::pin(async move { fw.remove_network(&p).await })).expect("remove_network");
}

fn add_ports(fw: &Fw, p: &NetworkPolicy, ep: &str, ports: &[PortMapping]) -> anyhow::Result<()> {
    let (p, ep, ports) = (p.clone(), ep.to_string(), ports.to_vec());
    fw.call(move |fw| Box::pin(async move { fw.add_ports(&p, &ep, &ports).await }))
}

fn remove_ports(fw: &Fw, p: &NetworkPolicy, ep: &str, ports: &[PortMapping]) {
    let (p, ep, ports) = (p.clone(), ep.to_string(), ports.to_vec());
    fw.call(move |fw| Box::pin(async move { fw.remove_ports(&p, &ep, &ports).await })).expect("remove_ports");
}

fn owned(fw: &Fw) -> Vec<String> {
    fw.call(|fw| Box::pin(async move { fw.owned_networks().await })).expect("owned_networks")
}

fn ok_from(got: &Option<String>, server: &str) -> bool {
    got.as_deref().is_some_and(|g| g.split_whitespace().next() == Some(server))
}

fn seen_as(got: &Option<String>) -> Option<&str> {
    got.as_deref().and_then(|g| g.split_whitespace().nth(1))
}

fn scenario(kind: BackendKind, real_dockerd: bool) {
    let lab = lab(real_dockerd);
    lab.host.sysctl("net.bridge.bridge-nf-call-iptables", "1");
    let before = snapshot(&lab.host);

    let fw = Fw::open(&lab.host, kind);
    assert_eq!(fw.call(|fw| Box::pin(async move { fw.kind() })), kind);

    // The skeleton alone: a network added and removed again.
    let z = policy(NET_Z, "loomZ", "198.18.9.0/24");
    add(&fw, &z);
    remove(&fw, &z);
    let skeleton = snapshot(&lab.host);

    let a = policy(NET_A, "loomA", "198.18.1.0/24");
    let b = policy(NET_B, "loomB", "198.18.2.0/24");
    let c = NetworkPolicy { internal: true, masquerade: false, ..policy(NET_C, "loomC", "198.18.3.0/24") };
    for p in [&a, &b, &c] {
        add(&fw, p);
    }
    // netloom's FORWARD rule comes right after dockerd's DOCKER-USER jump.
    let forward: Vec<String> =
        lab.host.sh("iptables -w -S FORWARD").lines().filter(|l| l.starts_with("-A ")).map(String::from).collect();
    assert_eq!(forward[0], "-A FORWARD -j DOCKER-USER");
    assert!(forward[1].contains("netloom:"), "{forward:?}");

    // Idempotent: a second add changes nothing.
    let once = snapshot(&lab.host);
    add(&fw, &a);
    assert_eq!(snapshot(&lab.host), once, "add_network is not idempotent");
    fw.on_thread(|| netloom_firewall::enable_route_localnet("loomA")).unwrap();

    let ports = [tcp(None, 8080, "198.18.1.2", 80), tcp(Some("198.18.0.1"), 8081, "198.18.1.3", 80)];
    add_ports(&fw, &a, EP1, &ports).unwrap();
    add_ports(&fw, &a, EP1, &ports).expect("add_ports is idempotent");
    // Another endpoint may not take a published host port.
    let clash = add_ports(&fw, &b, EP2, &[tcp(None, 8080, "198.18.2.2", 80)]).unwrap_err();
    assert!(
        clash.downcast_ref::<FirewallError>().is_some_and(|e| matches!(e, FirewallError::PortInUse(_))),
        "{clash:#}"
    );

    let _servers = [
        Server::start(lab.c("c1"), 80, "c1"),
        Server::start(lab.c("c2"), 80, "c2"),
        Server::start(lab.c("c3"), 80, "c3"),
        Server::start(lab.c("d1"), 80, "d1"),
        Server::start(&lab.client, 9000, "client"),
    ];
    let (c1, c2, c3, c4, d1, client, host) =
        (lab.c("c1"), lab.c("c2"), lab.c("c3"), lab.c("c4"), lab.c("d1"), &lab.client, &lab.host);

    let got = probes(&[
        (c1, "198.18.0.2:9000"),     // 0 egress, masqueraded
        (client, "198.18.0.1:8080"), // 1 published, from another host
        (client, "198.18.0.1:8081"), // 2 published on one host address
        (c3, "198.18.0.1:8080"),     // 3 published, from an isolated other network
        (c1, "198.18.0.1:8080"),     // 4 hairpin to itself
        (c2, "198.18.0.1:8080"),     // 5 hairpin within the network
        (host, "127.0.0.1:8080"),    // 6 the host's localhost
        (host, "198.18.0.1:8080"),   // 7 the host via its own address
        (c1, "198.18.1.3:80"),       // 8 icc through FORWARD (bridge-nf-call-iptables=1)
        (d1, "198.18.0.1:8080"),     // 9 published, from a Docker container
        (c1, "198.18.1.1:8081"),     // 10 the 8081 mapping is only on 198.18.0.1: no DNAT
    ]);
    assert!(ok_from(&got[0], "client"), "egress: {:?}", got[0]);
    assert_eq!(seen_as(&got[0]), Some("198.18.0.1"), "egress is masqueraded");
    assert!(ok_from(&got[1], "c1"), "published from the client: {:?}", got[1]);
    assert_eq!(seen_as(&got[1]), Some("198.18.0.2"), "published traffic keeps the client's address");
    assert!(ok_from(&got[2], "c2"), "host_ip mapping: {:?}", got[2]);
    assert!(ok_from(&got[3], "c1"), "published from network B: {:?}", got[3]);
    assert!(ok_from(&got[4], "c1"), "hairpin to self: {:?}", got[4]);
    assert!(ok_from(&got[5], "c1"), "hairpin within the network: {:?}", got[5]);
    assert_eq!(seen_as(&got[5]), Some("198.18.1.1"), "hairpin traffic is masqueraded");
    assert!(ok_from(&got[6], "c1"), "localhost: {:?}", got[6]);
    assert!(ok_from(&got[7], "c1"), "host address: {:?}", got[7]);
    assert!(ok_from(&got[8], "c2"), "icc: {:?}", got[8]);
    assert!(ok_from(&got[9], "c1"), "published from docker0: {:?}", got[9]);
    assert_eq!(got[10], None, "host_ip restricts the DNAT");

    let blocked = probes(&[
        (c3, "198.18.1.2:80"),   // B → A directly
        (c1, "198.18.2.2:80"),   // A → B directly
        (c4, "198.18.0.2:9000"), // internal → outside
        (c4, "198.18.0.1:8080"), // internal → a published port
        (d1, "198.18.1.2:80"),   // docker0 → A directly
        (c1, "198.18.4.2:80"),   // A → docker0 directly
    ]);
    assert_eq!(blocked, vec![None; 6], "isolation/internal");

    // Restart without memory: a new instance finds the networks and removes them.
    drop(fw);
    let fw = Fw::open(&lab.host, kind);
    let mut ids = owned(&fw);
    ids.sort();
    assert_eq!(ids, [NET_A, NET_B, NET_C]);

    remove_ports(&fw, &a, EP1, &ports);
    remove_ports(&fw, &a, EP1, &ports); // idempotent
    assert_eq!(probes(&[(client, "198.18.0.1:8080")]), vec![None]);
    add_ports(&fw, &a, EP1, &ports).unwrap();
    assert!(ok_from(&probes(&[(client, "198.18.0.1:8080")])[0], "c1"));

    // Ports of an endpoint that vanished while the driver was down go; the live one's stay.
    add_ports(&fw, &a, EP2, &[tcp(None, 8090, "198.18.1.3", 80)]).unwrap();
    let (a2, live) = (a.clone(), vec![EP1.to_string()]);
    let n = fw.call(move |fw| Box::pin(async move { fw.retain_endpoints(&a2, &live).await })).unwrap();
    assert_eq!(n, 1);
    let got = probes(&[(client, "198.18.0.1:8090"), (client, "198.18.0.1:8080")]);
    assert_eq!(got[0], None);
    assert!(ok_from(&got[1], "c1"), "{:?}", got[1]);

    // remove_network takes the ports too, and leaves only the skeleton.
    for id in [NET_A, NET_B, NET_C] {
        let id = id.to_string();
        fw.call(move |fw| Box::pin(async move { fw.remove_network_by_id(&id).await })).unwrap();
    }
    remove(&fw, &a); // idempotent
    assert!(owned(&fw).is_empty());
    assert_eq!(snapshot(&lab.host), skeleton, "removal left rules behind");
    assert_eq!(probes(&[(client, "198.18.0.1:8080")]), vec![None]);

    fw.call(|fw| Box::pin(async move { fw.remove_all().await })).unwrap();
    assert_eq!(rules_of(&snapshot(&lab.host)), rules_of(&before), "remove_all left rules behind");
}

#[test]
fn iptables_backend_in_a_docker_like_host() {
    scenario(BackendKind::Iptables, false);
}

#[test]
fn nftables_backend_in_a_docker_like_host() {
    scenario(BackendKind::Nftables, false);
}

#[test]
fn iptables_backend_next_to_a_real_dockerd() {
    scenario(BackendKind::Iptables, true);
}

#[test]
fn nftables_backend_next_to_a_real_dockerd() {
    scenario(BackendKind::Nftables, true);
}

/// A changed policy replaces the old one; then icc=false with br_netfilter: direct
/// container-to-container traffic is dropped in FORWARD, published ports still work within the
/// network (hairpin).
fn no_icc(kind: BackendKind) {
    let mut lab = Lab::new();
    lab.host.sh("iptables -w -P FORWARD DROP");
    lab.host.sysctl("net.bridge.bridge-nf-call-iptables", "1");
    lab.bridge("loomA", "198.18.1.1/24");
    lab.container("c1", "loomA", "198.18.1.2/24", "198.18.1.1");
    lab.container("c2", "loomA", "198.18.1.3/24", "198.18.1.1");
    let fw = Fw::open(&lab.host, kind);
    // The policy changes twice before it settles: another bridge, then icc off. add_network
    // must replace the earlier rules, not add to them.
    let a = policy(NET_A, "loomOld", "198.18.1.0/24");
    add(&fw, &a);
    let a = policy(NET_A, "loomA", "198.18.1.0/24");
    add(&fw, &a);
    assert!(!snapshot(&lab.host).contains("loomOld"), "rules of the old bridge stayed");
    let a = NetworkPolicy { icc: false, ..a };
    add(&fw, &a);
    add_ports(&fw, &a, EP1, &[tcp(None, 8080, "198.18.1.2", 80)]).unwrap();
    let _s = [Server::start(lab.c("c1"), 80, "c1"), Server::start(&lab.client, 9000, "client")];
    let got =
        probes(&[(lab.c("c2"), "198.18.1.2:80"), (lab.c("c2"), "198.18.0.1:8080"), (lab.c("c2"), "198.18.0.2:9000")]);
    assert_eq!(got[0], None, "c2c must be dropped without icc");
    assert!(ok_from(&got[1], "c1"), "hairpin without icc: {:?}", got[1]);
    assert!(ok_from(&got[2], "client"), "egress without icc: {:?}", got[2]);
    fw.call(|fw| Box::pin(async move { fw.remove_all().await })).unwrap();
}

#[test]
fn iptables_without_icc() {
    no_icc(BackendKind::Iptables);
}

#[test]
fn nftables_without_icc() {
    no_icc(BackendKind::Nftables);
}

/// Dual-stack network with the ip6tables FORWARD policy DROP (Docker always sets it): IPv6
/// egress is masqueraded, an IPv6 port is published (from the client, the host and hairpin),
/// and everything goes away again.
fn dual_stack(kind: BackendKind) {
    let mut lab = Lab::new();
    let (host, client) = (&lab.host, &lab.client);
    host.sysctl("net.ipv6.conf.all.forwarding", "1");
    host.sysctl("net.bridge.bridge-nf-call-ip6tables", "1");
    host.ip("addr add 2001:db8:ff::1/64 dev up0 nodad");
    client.ip("addr add 2001:db8:ff::2/64 dev eth0 nodad");
    host.sh("iptables -w -P FORWARD DROP; ip6tables -w -P FORWARD DROP");
    lab.bridge("loomA", "198.18.1.1/24");
    lab.host.ip("addr add 2001:db8:1::1/64 dev loomA nodad");
    lab.container("c1", "loomA", "198.18.1.2/24", "198.18.1.1");
    lab.c("c1").ip("addr add 2001:db8:1::2/64 dev eth0 nodad");
    lab.c("c1").ip("-6 route add default via 2001:db8:1::1");
    let before = snapshot(&lab.host);

    let fw = Fw::open(&lab.host, kind);
    let a = NetworkPolicy {
        subnets: vec!["198.18.1.0/24".parse().unwrap(), "2001:db8:1::/64".parse().unwrap()],
        ..policy(NET_A, "loomA", "198.18.1.0/24")
    };
    add(&fw, &a);
    let ports = [tcp(None, 8080, "198.18.1.2", 80), tcp(None, 8080, "2001:db8:1::2", 81)];
    add_ports(&fw, &a, EP1, &ports).unwrap();
    let _s = [
        Server::start(lab.c("c1"), 80, "c1"),
        Server::start6(lab.c("c1"), 81, "c1v6"),
        Server::start6(&lab.client, 9001, "client"),
    ];
    let (c1, client, host) = (lab.c("c1"), &lab.client, &lab.host);
    let got = probes(&[
        (c1, "[2001:db8:ff::2]:9001"),
        (client, "[2001:db8:ff::1]:8080"),
        (host, "[2001:db8:ff::1]:8080"),
        (c1, "[2001:db8:ff::1]:8080"),
        (client, "198.18.0.1:8080"),
    ]);
    assert!(ok_from(&got[0], "client"), "v6 egress: {:?}", got[0]);
    assert_eq!(seen_as(&got[0]), Some("2001:db8:ff::1"), "v6 egress is masqueraded");
    assert!(ok_from(&got[1], "c1v6"), "v6 published from the client: {:?}", got[1]);
    assert!(ok_from(&got[2], "c1v6"), "v6 published from the host: {:?}", got[2]);
    assert!(ok_from(&got[3], "c1v6"), "v6 hairpin: {:?}", got[3]);
    assert!(ok_from(&got[4], "c1"), "v4 next to v6: {:?}", got[4]);

    remove(&fw, &a);
    assert_eq!(probes(&[(client, "[2001:db8:ff::1]:8080")]), vec![None]);
    fw.call(|fw| Box::pin(async move { fw.remove_all().await })).unwrap();
    // Tables netloom made iptables create (here the nat tables, which the lab did not have)
    // stay, empty, as documented; no rule or chain of netloom does.
    let after = snapshot(&lab.host);
    assert!(!after.contains("netloom") && !after.contains("LOOM"), "remove_all left rules behind:\n{after}");
    assert!(before.lines().all(|l| after.contains(l)), "remove_all removed something not ours:\n{after}");
}

#[test]
fn iptables_dual_stack() {
    dual_stack(BackendKind::Iptables);
}

#[test]
fn nftables_dual_stack() {
    dual_stack(BackendKind::Nftables);
}

/// Installing many policies at once leaves the same rules as one by one, replaces a changed
/// policy's rules and changes nothing when repeated.
fn batch(kind: BackendKind) {
    let lab = Lab::new();
    let fw = Fw::open(&lab.host, kind);
    let nets = vec![
        policy(NET_A, "loomA", "198.18.1.0/24"),
        policy(NET_B, "loomB", "198.18.2.0/24"),
        NetworkPolicy { internal: true, ..policy(NET_C, "loomC", "198.18.3.0/24") },
    ];
    // Networks' rules don't depend on each other, so their order does not matter.
    let rules = || {
        let mut lines: Vec<String> = snapshot(&lab.host).lines().map(str::to_string).collect();
        lines.sort();
        lines
    };
    for net in &nets {
        add(&fw, net);
    }
    let one_by_one = rules();
    fw.call(|fw| Box::pin(async move { fw.remove_all().await })).unwrap();

    let mut stale = nets.clone();
    stale[1].bridge = "loomOld".into();
    let install =
        |nets: Vec<NetworkPolicy>| fw.call(move |fw| Box::pin(async move { fw.add_networks(&nets).await })).unwrap();
    install(stale);
    install(nets.clone());
    assert_eq!(rules(), one_by_one, "a batch install differs from one by one");
    install(nets);
    assert_eq!(rules(), one_by_one, "a repeated batch install changed the rules");
    let mut ids = owned(&fw);
    ids.sort();
    assert_eq!(ids, [NET_A, NET_B, NET_C]);
    fw.call(|fw| Box::pin(async move { fw.remove_all().await })).unwrap();
}

/// More policies than one nftables batch carries: all installed, all owned, all removed.
fn many_batches(kind: BackendKind) {
    let lab = Lab::new();
    let fw = Fw::open(&lab.host, kind);
    let nets: Vec<NetworkPolicy> = (1..=150)
        .map(|i| policy(&format!("{i:03}{}", "a".repeat(61)), &format!("loomM{i}"), &format!("198.19.{i}.0/24")))
        .collect();
    let mut want: Vec<String> = nets.iter().map(|n| n.network_id.clone()).collect();
    want.sort();
    fw.call(move |fw| Box::pin(async move { fw.add_networks(&nets).await })).unwrap();
    let mut ids = owned(&fw);
    ids.sort();
    assert_eq!(ids, want, "not every network of a 150-policy install is there");
    fw.call(|fw| Box::pin(async move { fw.remove_all().await })).unwrap();
    assert!(owned(&fw).is_empty());
}

#[test]
fn iptables_install_of_150_policies() {
    many_batches(BackendKind::Iptables);
}

#[test]
fn nftables_install_of_150_policies() {
    many_batches(BackendKind::Nftables);
}

#[test]
fn iptables_batch_install() {
    batch(BackendKind::Iptables);
}

#[test]
fn nftables_batch_install() {
    batch(BackendKind::Nftables);
}
