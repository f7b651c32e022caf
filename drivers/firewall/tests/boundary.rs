//! The host boundary, both backends, in a lab of network namespaces: a container and a LAN
//! neighbour that route 127.0.0.0/8 to the host get nothing from the host's loopback, and VXLAN
//! reaches the host only from the guard's peers, never from a container through the host.
//! Every attack is counted (nft counters and receiving sockets in the host namespace), after the
//! allowed paths are shown to work. Needs root; fails (never skips) otherwise.
//!
//! Addresses (all inside the lab): uplink 198.18.0.0/24 (host .1, LAN neighbour .2), network A on
//! loomA 198.18.1.0/24 (c1 .2), a member host's link 198.18.5.0/24 (host .1, member .2) and
//! 2001:db8:5::/64, the neighbour's IPv6 2001:db8:ff::/64.

mod common;

use std::net::IpAddr;

use common::{policy, probes, rules_of, send_udp, snapshot, tcp, Fw, Lab, Ns, Server, UdpCounter, EP1, NET_A};
use netloom_firewall::{BackendKind, NetworkPolicy};

fn network_a() -> NetworkPolicy {
    policy(NET_A, "loomA", "198.18.1.0/24")
}

fn answered_by(got: &Option<String>, server: &str) -> bool {
    got.as_deref().is_some_and(|g| g.split_whitespace().next() == Some(server))
}

/// Counters in a table of the test's own, at hooks around netloom's: what reached the host for
/// 127/8 from outside (before any drop), what was delivered to it (not counting the replies to
/// the host's own connections to published ports, which are un-NATed to 127.0.0.1), and what
/// left it with a 127/8 source without being a DNATed localhost connection (answers of the
/// host's loopback services).
const COUNTERS: &str = r#"
table inet fwtest {
    counter arrived {}
    counter delivered {}
    counter leaked {}
    chain pre { type filter hook prerouting priority -350; iifname != "lo" ip daddr 127.0.0.0/8 counter name arrived; }
    chain input { type filter hook input priority 500; iifname != "lo" ip daddr 127.0.0.0/8 ct status & (snat | dnat) == 0 counter name delivered; }
    chain post { type filter hook postrouting priority -500; oifname != "lo" ip saddr 127.0.0.0/8 ct status & dnat == 0 counter name leaked; }
}
"#;

fn counter(ns: &Ns, name: &str) -> u64 {
    let out = ns.sh(&format!("nft list counter inet fwtest {name}"));
    let packets = out.split_whitespace().skip_while(|w| *w != "packets").nth(1).expect("packets in nft output");
    packets.parse().expect("packet count")
}

/// Makes `ns` send everything for 127.0.0.0/8 to `gateway` (what an attacker with NET_ADMIN, or
/// one crafting frames, does).
fn route_loopback_away(ns: &Ns, gateway: &str) {
    ns.sysctl("net.ipv4.conf.all.route_localnet", "1");
    ns.sysctl("net.ipv4.conf.eth0.route_localnet", "1");
    // Without its addresses lo has no local routes left to catch 127/8.
    ns.ip("addr flush dev lo");
    ns.ip("link set lo down");
    ns.ip(&format!("route add 127.0.0.0/8 via {gateway}"));
    let route = ns.ip("route get 127.0.0.1");
    assert!(route.contains(&format!("via {gateway}")), "127.0.0.1 is not routed to the host: {route}");
}

fn loopback_attack(kind: BackendKind) {
    let mut lab = Lab::new();
    lab.bridge("loomA", "198.18.1.1/24");
    lab.container("c1", "loomA", "198.18.1.2/24", "198.18.1.1");
    let host = &lab.host;
    host.sh(&format!("nft -f - <<'EOF'\n{COUNTERS}\nEOF"));
    let fw = Fw::open(host, kind);
    let a = network_a();
    let a2 = a.clone();
    fw.call(move |fw| Box::pin(async move { fw.add_network(&a2).await })).expect("add_network");
    fw.on_thread(|| netloom_firewall::enable_route_localnet("loomA")).unwrap();
    let ports = [tcp(None, 8080, "198.18.1.2", 80), tcp(Some("127.0.0.1"), 8081, "198.18.1.2", 80)];
    let (a2, p2) = (a.clone(), ports.to_vec());
    fw.call(move |fw| Box::pin(async move { fw.add_ports(&a2, EP1, &p2).await })).expect("add_ports");

    let _servers =
        [Server::start_on(host, "127.0.0.1", 9999, "loopback-service"), Server::start(lab.c("c1"), 80, "c1")];
    let udp_service = UdpCounter::start(host, "127.0.0.1:9998");
    let (c1, client) = (lab.c("c1"), &lab.client);

    // The allowed paths: the host's own loopback service and published ports (also on
    // 127.0.0.1), from the LAN, and from the container through a host address (hairpin).
    let got = probes(&[
        (host, "127.0.0.1:9999"),
        (host, "127.0.0.1:8080"),
        (host, "127.0.0.1:8081"),
        (client, "198.18.0.1:8080"),
        (c1, "198.18.0.1:8080"),
    ]);
    assert!(answered_by(&got[0], "loopback-service"), "the host's loopback service: {:?}", got[0]);
    assert!(answered_by(&got[1], "c1"), "published port from the host's 127.0.0.1: {:?}", got[1]);
    assert!(answered_by(&got[2], "c1"), "port published on 127.0.0.1, from the host: {:?}", got[2]);
    assert!(answered_by(&got[3], "c1"), "published port from the LAN: {:?}", got[3]);
    assert!(answered_by(&got[4], "c1"), "published port from the container (hairpin): {:?}", got[4]);
    send_udp(host, None, "127.0.0.1:9998", 5);
    assert_eq!(udp_service.settled(), 5, "the host's own UDP to its loopback service");
    udp_service.reset();
    let leaked_before = counter(host, "leaked");
    assert_eq!(leaked_before, 0, "nothing leaked before the attack");

    // The attack: the container and the LAN neighbour route 127/8 to the host.
    route_loopback_away(c1, "198.18.1.1");
    route_loopback_away(client, "198.18.0.1");
    let attacks = probes(&[
        (c1, "127.0.0.1:9999"),
        (c1, "127.0.0.1:8081"),
        (c1, "127.0.0.1:8080"),
        (client, "127.0.0.1:9999"),
        (client, "127.0.0.1:8081"),
        (client, "127.0.0.1:8080"),
    ]);
    send_udp(c1, None, "127.0.0.1:9998", 20);
    send_udp(client, None, "127.0.0.1:9998", 20);
    let arrived = counter(host, "arrived");
    assert!(
        arrived >= 40,
        "only {arrived} of the attack's packets reached the host; the test proves nothing\n{}",
        host.sh("nft list table inet fwtest; ip -s link")
    );
    assert_eq!(attacks, vec![None; 6], "the host's loopback answered from outside");
    assert_eq!(udp_service.settled(), 0, "UDP datagrams reached the host's loopback service from outside");
    assert_eq!(counter(host, "delivered"), 0, "packets for 127/8 from outside were delivered locally");
    assert_eq!(counter(host, "leaked"), 0, "the host sent packets with a 127/8 source out of a non-loopback interface");

    // The host itself still reaches its published ports on 127.0.0.1.
    let got = probes(&[(host, "127.0.0.1:8080"), (host, "127.0.0.1:8081")]);
    assert!(answered_by(&got[0], "c1") && answered_by(&got[1], "c1"), "after the attack: {got:?}");

    // What the guard is for: without it (deleted by hand) the same attack gets answers, but
    // the port published on 127.0.0.1 is still not DNATed for it (the second line).
    match kind {
        BackendKind::Iptables => {
            host.sh("iptables -w -t raw -D PREROUTING ! -i lo -d 127.0.0.0/8 -m comment --comment netloom:base -j DROP")
        }
        BackendKind::Nftables => host.sh("nft flush chain inet netloom loopback"),
    };
    let unguarded = probes(&[(c1, "127.0.0.1:9999"), (c1, "127.0.0.1:8081")]);
    let leaked = counter(host, "leaked");
    eprintln!(
        "[loopback {kind}] without the guard: {leaked} packets left with a 127/8 source, answer {:?}",
        unguarded[0]
    );
    assert!(
        leaked > 0 && answered_by(&unguarded[0], "loopback-service"),
        "without the guard the attack got nothing either; the test proves nothing"
    );
    assert_eq!(unguarded[1], None, "a port published on 127.0.0.1 was DNATed for a packet from outside");
    // add_network puts the guard back.
    let a2 = a.clone();
    fw.call(move |fw| Box::pin(async move { fw.add_network(&a2).await })).expect("add_network");
    let before = counter(host, "leaked");
    assert_eq!(probes(&[(c1, "127.0.0.1:9999")]), vec![None], "the guard did not come back");
    assert_eq!(counter(host, "leaked"), before, "the guard did not come back");

    fw.call(|fw| Box::pin(async move { fw.remove_all().await })).unwrap();
    let left = snapshot(host);
    assert!(!left.contains("netloom") && !left.contains("LOOM"), "remove_all left rules behind:\n{left}");
}

#[test]
fn iptables_loopback_stays_the_hosts() {
    loopback_attack(BackendKind::Iptables);
}

#[test]
fn nftables_loopback_stays_the_hosts() {
    loopback_attack(BackendKind::Nftables);
}

fn set_guard(fw: &Fw, port: u16, peers: &[&str]) {
    let peers: Vec<IpAddr> = peers.iter().map(|p| p.parse().unwrap()).collect();
    fw.call(move |fw| Box::pin(async move { fw.set_vxlan_guard(port, &peers).await })).expect("set_vxlan_guard");
}

fn vxlan_guard(kind: BackendKind) {
    let mut lab = Lab::new();
    let member = Ns::new("member");
    {
        let host = &lab.host;
        host.ip(&format!("link add up1 type veth peer name eth0 netns {}", member.name));
        host.ip("addr add 198.18.5.1/24 dev up1");
        host.ip("addr add 2001:db8:5::1/64 dev up1 nodad");
        host.ip("link set up1 up");
        member.ip("addr add 198.18.5.2/24 dev eth0");
        member.ip("addr add 2001:db8:5::2/64 dev eth0 nodad");
        member.ip("link set eth0 up");
        host.ip("addr add 2001:db8:ff::1/64 dev up0 nodad");
        lab.client.ip("addr add 2001:db8:ff::2/64 dev eth0 nodad");
    }
    lab.bridge("loomA", "198.18.1.1/24");
    lab.container("c1", "loomA", "198.18.1.2/24", "198.18.1.1");
    let (host, client, c1) = (&lab.host, &lab.client, lab.c("c1"));
    let fw = Fw::open(host, kind);
    let a = network_a();
    fw.call(move |fw| Box::pin(async move { fw.add_network(&a).await })).expect("add_network");

    let vtep4 = UdpCounter::start(host, "0.0.0.0:4789");
    // (A v6 wildcard socket would take the IPv4 port too.)
    let vtep6 = UdpCounter::start(host, "[2001:db8:5::1]:4789");
    let vtep6_lan = UdpCounter::start(host, "[2001:db8:ff::1]:4789");
    let outside = UdpCounter::start(client, "0.0.0.0:4789");
    let outside_other = UdpCounter::start(client, "0.0.0.0:4790");
    // Neighbours resolved before counting (UDP to the discard port).
    for (ns, to) in [
        (&member, "198.18.5.1:9"),
        (&member, "[2001:db8:5::1]:9"),
        (client, "198.18.0.1:9"),
        (client, "[2001:db8:ff::1]:9"),
        (c1, "198.18.0.2:9"),
    ] {
        send_udp(ns, None, to, 1);
    }
    std::thread::sleep(std::time::Duration::from_millis(300));

    // Without a guard everyone gets through: the counting works.
    send_udp(client, None, "198.18.0.1:4789", 10);
    assert_eq!(vtep4.settled(), 10, "VXLAN from the neighbour before the guard");
    send_udp(c1, None, "198.18.0.2:4789", 10);
    assert_eq!(outside.settled(), 10, "forwarded UDP 4789 before the guard");
    vtep4.reset();
    outside.reset();

    set_guard(&fw, 4789, &["198.18.5.2", "2001:db8:5::2"]);
    let once = snapshot(host);
    set_guard(&fw, 4789, &["198.18.5.2", "2001:db8:5::2"]);
    assert_eq!(snapshot(host), once, "set_vxlan_guard is not idempotent");

    // Members get through, on IPv4 and IPv6.
    send_udp(&member, None, "198.18.5.1:4789", 30);
    send_udp(&member, None, "[2001:db8:5::1]:4789", 30);
    assert_eq!(vtep4.settled(), 30, "VXLAN from a member (IPv4)");
    assert_eq!(vtep6.settled(), 30, "VXLAN from a member (IPv6)");
    vtep4.reset();
    vtep6.reset();
    // A non-member, to either of the host's addresses, IPv4 and IPv6: nothing.
    send_udp(client, None, "198.18.0.1:4789", 30);
    send_udp(client, None, "198.18.5.1:4789", 30);
    send_udp(client, None, "[2001:db8:ff::1]:4789", 30);
    assert_eq!(vtep4.settled(), 0, "VXLAN from a non-member reached the host (IPv4)");
    assert_eq!(vtep6_lan.settled(), 0, "VXLAN from a non-member reached the host (IPv6)");
    // A container of this host: its UDP 4789 goes nowhere, its other traffic still goes out;
    // also past an ACCEPT inserted on top of filter FORWARD later (as dockerd does for every
    // bridge network it creates, e.g. docker_gwbridge).
    host.sh("iptables -w -I FORWARD 1 -i loomA -j ACCEPT");
    send_udp(c1, None, "198.18.0.2:4789", 30);
    send_udp(c1, None, "198.18.0.2:4790", 30);
    assert_eq!(outside.settled(), 0, "a container's UDP 4789 was forwarded");
    assert_eq!(outside_other.settled(), 30, "a container's other UDP must still be forwarded");

    // The set replaced: the neighbour is a member now, the old member is not.
    set_guard(&fw, 4789, &["198.18.0.2"]);
    send_udp(client, None, "198.18.0.1:4789", 20);
    send_udp(&member, None, "198.18.5.1:4789", 20);
    send_udp(&member, None, "[2001:db8:5::1]:4789", 20);
    assert_eq!(vtep4.settled(), 20, "only the new member's frames");
    assert_eq!(vtep6.settled(), 0, "the departed member's IPv6 frames");
    vtep4.reset();

    // Another port: the old one is no longer guarded.
    set_guard(&fw, 8472, &["198.18.0.2"]);
    send_udp(&member, None, "198.18.5.1:4789", 10);
    assert_eq!(vtep4.settled(), 10, "port 4789 still guarded after moving the guard to 8472");
    vtep4.reset();

    host.sh("iptables -w -D FORWARD -i loomA -j ACCEPT");
    fw.call(|fw| Box::pin(async move { fw.remove_vxlan_guard().await })).expect("remove_vxlan_guard");
    fw.call(|fw| Box::pin(async move { fw.remove_vxlan_guard().await })).expect("remove_vxlan_guard is idempotent");
    let after = snapshot(host);
    assert!(!after.contains("vxlan") && !after.contains("VXLAN"), "the guard left rules behind:\n{after}");
    send_udp(client, None, "198.18.0.1:4789", 10);
    assert_eq!(vtep4.settled(), 10, "VXLAN after the guard went");

    fw.call(|fw| Box::pin(async move { fw.remove_all().await })).unwrap();
    assert!(!rules_of(&snapshot(host)).contains("netloom"), "remove_all left rules behind");
}

#[test]
fn iptables_vxlan_only_from_members() {
    vxlan_guard(BackendKind::Iptables);
}

#[test]
fn nftables_vxlan_only_from_members() {
    vxlan_guard(BackendKind::Nftables);
}

/// A skeleton rule of an earlier version (the nat PREROUTING jump without `! -d 127.0.0.0/8`)
/// is replaced, not kept next to the new one.
#[test]
fn iptables_upgrade_replaces_the_old_prerouting_jump() {
    let lab = Lab::new();
    let host = &lab.host;
    host.sh("iptables -w -t nat -N LOOM-DNAT");
    host.sh("iptables -w -t nat -I PREROUTING 1 -m addrtype --dst-type LOCAL -m comment --comment netloom:base -j LOOM-DNAT");
    lab.bridge("loomA", "198.18.1.1/24");
    let fw = Fw::open(host, BackendKind::Iptables);
    let a = network_a();
    fw.call(move |fw| Box::pin(async move { fw.add_network(&a).await })).expect("add_network");
    let jumps: Vec<String> = host
        .sh("iptables -w -t nat -S PREROUTING")
        .lines()
        .filter(|l| l.contains("LOOM-DNAT"))
        .map(String::from)
        .collect();
    assert_eq!(jumps.len(), 1, "{jumps:?}");
    assert!(jumps[0].contains("! -d 127.0.0.0/8"), "{jumps:?}");
    let guards = host.sh("iptables -w -t raw -S PREROUTING; ip6tables -w -t raw -S PREROUTING");
    assert!(guards.contains("-d 127.0.0.0/8 ! -i lo") && guards.contains("-d ::1/128 ! -i lo"), "{guards}");
    fw.call(|fw| Box::pin(async move { fw.remove_all().await })).unwrap();
}

/// `--firewall auto`: nftables on this kernel (which has nf_tables), probed in the caller's
/// namespace.
#[test]
fn auto_picks_nftables_where_the_kernel_has_it() {
    common::require_root_and_tools();
    let ns = Ns::new("detect");
    assert_eq!(ns.run(BackendKind::detect), BackendKind::Nftables);
    assert_eq!(ns.run(|| netloom_firewall::BackendChoice::Auto.resolve()), BackendKind::Nftables);
    let fixed: netloom_firewall::BackendChoice = "iptables".parse().unwrap();
    assert_eq!(fixed.resolve(), BackendKind::Iptables);
}
