//! The host boundary, attacked as an attacker would (issue 11), on the netns harness with real
//! dockerd. Every attack first shows that the target runs and answers through the allowed path,
//! then sends its probes, checks that they were sent (counted where they arrive), and COUNTS what
//! got through: answers the attacker got, packets the host leaked, frames a container received.
//!
//! - loopback: a container and a LAN neighbour route 127.0.0.1 to the host (loom-bridge and
//!   loom-host), against a host service bound to 127.0.0.1 and ports published on it;
//! - VXLAN injection: crafted frames to UDP 4789 from a LAN host that is no member and from
//!   capability-less containers on a member host; and again after a member's loom-overlay was
//!   restarted on the other firewall backend (the old backend's guard must go, the new one hold);
//! - IPv6 publishing: `-p P:80` answers on the host's IPv6 address (TCP and UDP), and
//!   `-p [v6]:P:80` works;
//! - one subnet, one network per host (loom-bridge and loom-host);
//! - `--internal` loom-host and loom-macvlan networks have no way out.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use netloom_tests::{
    ping_replies, scenario, scenario_tests, wait_until, Cluster, DockerVersion, Host, HostConfig, LocalOverlay,
    NftCounters, UnderlayEtcd, IMAGE,
};

/// The UDP tool of this crate (busybox has no UDP client or server).
const PROBE: &str = env!("CARGO_BIN_EXE_netloom-probe");
const WEB: &[&str] = &["httpd", "-f", "-p", "80", "-h", "/"];

fn run(h: &Host, name: &str, args: &[&str], cmd: &[&str]) -> Result<()> {
    let mut argv = vec!["run", "-d", "--name", name, "--hostname", name];
    argv.extend_from_slice(args);
    argv.push(IMAGE);
    argv.extend_from_slice(cmd);
    h.docker(&argv).with_context(|| format!("starting {name} on {}", h.name()))?;
    Ok(())
}

/// `wget` of `url` on a host or neighbour: Some(body) if anything answered. (No `-T`: this
/// busybox crashes with it; `timeout` bounds the attempt.)
fn host_get(h: &Host, url: &str) -> Option<String> {
    h.exec(&["timeout", "4", "busybox", "wget", "-q", "-O-", url]).ok().map(|s| s.trim().to_string())
}

/// `wget` of `url` from inside a container: Some(body) if anything answered.
fn container_get(h: &Host, container: &str, url: &str) -> Option<String> {
    h.container_exec(container, &["timeout", "4", "wget", "-q", "-O-", url]).ok().map(|s| s.trim().to_string())
}

/// Retries `get` for a few seconds (fresh IPv6 addresses, rules being programmed), then requires
/// `want` as the answer.
fn expect_answer(what: &str, want: &str, mut get: impl FnMut() -> Option<String>) -> Result<()> {
    let mut last = None;
    let res = wait_until(Duration::from_secs(10), Duration::from_millis(300), what, || {
        last = get();
        Ok(last.as_deref() == Some(want))
    });
    res.with_context(|| format!("{what}: last answer {last:?}, want {want:?}"))
}

fn step(c: &Cluster, what: &str) {
    eprintln!("[host-boundary {}] {what}", c.name());
}

// ---- 1. the host's loopback -----------------------------------------------------------------

/// Attack probes: (what, URL) pairs, all aimed at 127.0.0.1 on the host.
const SECRET: &str = "host-only";
const LOOPBACK_PROBES: &[(&str, &str)] = &[
    ("the host service on 127.0.0.1:9000", "http://127.0.0.1:9000/secret"),
    ("the port published on all addresses", "http://127.0.0.1:8080/etc/hostname"),
    ("the port published on 127.0.0.1", "http://127.0.0.1:8082/etc/hostname"),
    ("loom-host's published port", "http://127.0.0.1:8081/etc/hostname"),
];

/// Makes a container route 127.0.0.0/8 through its gateway, as an attacker with NET_ADMIN in its
/// own namespace can (route_localnet in it lets the answers in, so that they can be counted).
fn route_loopback_out(h: &Host, container: &str) -> Result<()> {
    h.container_exec(
        container,
        &[
            "sh",
            "-c",
            "ip addr del 127.0.0.1/8 dev lo && ip route add 127.0.0.0/8 $(ip route | sed -n 's/^default //p')",
        ],
    )
    .with_context(|| format!("routing 127/8 out of {container}"))?;
    Ok(())
}

/// Runs every loopback probe from one attacker; the answers it got, each as "what: body".
fn loopback_answers(get: impl Fn(&str) -> Option<String> + Sync) -> Vec<String> {
    std::thread::scope(|s| {
        let probes: Vec<_> = LOOPBACK_PROBES
            .iter()
            .map(|(what, url)| {
                let get = &get;
                s.spawn(move || get(url).map(|body| format!("{what}: {body:?}")))
            })
            .collect();
        probes.into_iter().filter_map(|p| p.join().ok().flatten()).collect()
    })
}

fn loopback_scenario(c: &Cluster, docker: DockerVersion, firewall: &str) -> Result<()> {
    let h = c.add_host(HostConfig::new("h1", docker))?;
    let lan = c.add_neighbour("lan")?;
    h.start_plugin("loom-bridge", &["--firewall", firewall, "--log-level", "debug"])?;
    h.start_plugin("loom-host", &["--firewall", firewall, "--log-level", "debug"])?;
    let host_ip = h.underlay_ip().to_string();

    // A service of the host's own, bound to 127.0.0.1 only.
    let www = h.dir().join("www");
    fs::create_dir_all(&www)?;
    fs::write(www.join("secret"), format!("{SECRET}\n"))?;
    let _service = h.spawn(
        "loopback-service",
        &["busybox", "httpd", "-f", "-p", "127.0.0.1:9000", "-h", &www.display().to_string()],
    )?;
    expect_answer("the host's own 127.0.0.1:9000", SECRET, || host_get(&h, "http://127.0.0.1:9000/secret"))?;

    h.docker(&["network", "create", "-d", "loom-bridge", "--subnet", "172.26.1.0/24", "lb"])?;
    h.docker(&["network", "create", "-d", "loom-host", "--subnet", "172.26.2.0/24", "lh"])?;
    run(&h, "web", &["--network", "lb", "-p", "8080:80"], WEB)?;
    run(&h, "local", &["--network", "lb", "-p", "127.0.0.1:8082:80"], WEB)?;
    run(&h, "webh", &["--network", "lh", "-p", "8081:80"], WEB)?;
    let attacker = ["--cap-add", "NET_ADMIN", "--sysctl", "net.ipv4.conf.all.route_localnet=1"];
    run(&h, "atkb", &[&["--network", "lb"][..], &attacker[..]].concat(), &["sleep", "600"])?;
    run(&h, "atkh", &[&["--network", "lh"][..], &attacker[..]].concat(), &["sleep", "600"])?;

    // The allowed paths: the host's own 127.0.0.1, the LAN, hairpin and loom-host's ports.
    let allowed = |when: &str| -> Result<()> {
        expect_answer(&format!("{when}: host to 127.0.0.1:8080"), "web", || {
            host_get(&h, "http://127.0.0.1:8080/etc/hostname")
        })?;
        expect_answer(&format!("{when}: host to 127.0.0.1:8082"), "local", || {
            host_get(&h, "http://127.0.0.1:8082/etc/hostname")
        })?;
        expect_answer(&format!("{when}: host to 127.0.0.1:8081"), "webh", || {
            host_get(&h, "http://127.0.0.1:8081/etc/hostname")
        })?;
        let lan_url = format!("http://{host_ip}:8080/etc/hostname");
        expect_answer(&format!("{when}: LAN to {lan_url}"), "web", || host_get(&lan, &lan_url))?;
        let lan_url = format!("http://{host_ip}:8081/etc/hostname");
        expect_answer(&format!("{when}: LAN to {lan_url}"), "webh", || host_get(&lan, &lan_url))?;
        let url = format!("http://{host_ip}:8080/etc/hostname");
        expect_answer(&format!("{when}: the same network (hairpin) to {url}"), "web", || {
            container_get(&h, "atkb", &url)
        })?;
        expect_answer(&format!("{when}: another network to {url}"), "web", || container_get(&h, "atkh", &url))?;
        Ok(())
    };
    allowed("before the attack")?;
    step(c, "the allowed paths answer");

    let counters = NftCounters::in_host(
        &h,
        "inet",
        "nlt_loopback",
        &["probes_in", "loopback_leaks"],
        r#"
  chain arriving {
    type filter hook prerouting priority -500; policy accept;
    iifname != "lo" ip daddr 127.0.0.0/8 counter name probes_in
    iifname != "lo" ip6 daddr ::1 counter name probes_in
  }
  chain leaving {
    type filter hook postrouting priority 500; policy accept;
    oifname != "lo" ip saddr 127.0.0.0/8 counter name loopback_leaks
    oifname != "lo" ip6 saddr ::1 counter name loopback_leaks
  }"#,
    )?;

    route_loopback_out(&h, "atkb")?;
    route_loopback_out(&h, "atkh")?;
    lan.sh(&format!(
        "ip addr del 127.0.0.1/8 dev lo && ip route add 127.0.0.0/8 via {host_ip} && sysctl -qw net.ipv4.conf.all.route_localnet=1"
    ))?;

    let mut answers = Vec::new();
    type Get<'a> = &'a (dyn Fn(&str) -> Option<String> + Sync);
    let attackers: [(&str, Get); 3] = [
        ("a container on loom-bridge", &|url| container_get(&h, "atkb", url)),
        ("a container on loom-host", &|url| container_get(&h, "atkh", url)),
        ("a LAN neighbour", &|url| host_get(&lan, url)),
    ];
    for (who, get) in attackers {
        let before = counters.get("probes_in")?;
        let got = loopback_answers(|url| get(url));
        let arrived = counters.get("probes_in")? - before;
        eprintln!("[host-boundary {}] {who}: {arrived} probe packets arrived, answers: {got:?}", c.name());
        ensure!(arrived > 0, "{who}: no probe packet to 127/8 reached the host: the attack did not run");
        answers.extend(got.into_iter().map(|a| format!("{who} got {a}")));
    }
    let leaks = counters.get("loopback_leaks")?;
    step(c, &format!("{leaks} packets left the host with a loopback source; {} answers", answers.len()));
    ensure!(
        leaks == 0 && answers.is_empty(),
        "the host's loopback answered off the host: {leaks} packets with a 127/8 or ::1 source left through a \
         non-loopback interface, attackers got {} answers: {answers:#?}",
        answers.len()
    );

    allowed("after the attack")?;
    Ok(())
}

scenario_tests! {
    loopback_docker20_iptables: "hbl20ipt" => |c| loopback_scenario(c, DockerVersion::V20, "iptables"),
    loopback_docker20_nftables: "hbl20nft" => |c| loopback_scenario(c, DockerVersion::V20, "nftables"),
    loopback_docker26_iptables: "hbl26ipt" => |c| loopback_scenario(c, DockerVersion::V26, "iptables"),
    loopback_docker26_nftables: "hbl26nft" => |c| loopback_scenario(c, DockerVersion::V26, "nftables"),
}

// ---- 2. VXLAN injection ------------------------------------------------------------------------

const VNI: u32 = 5300;
const FRAMES: u64 = 300;
/// The crafted inner frames' EtherType (IEEE "local experimental"): nothing else sends it.
const PROBE_ETHERTYPE: &str = "0x88b5";
const INNER_PAYLOAD: usize = 100;
/// UDP header + VXLAN header + Ethernet header + payload: what a crafted datagram measures.
const CRAFTED_UDP_LEN: usize = 8 + 8 + 14 + INNER_PAYLOAD;

/// A VXLAN datagram's payload: the header for `vni`, then an Ethernet frame to `dst_mac`.
fn crafted_vxlan(vni: u32, dst_mac: &str) -> Result<String> {
    let mut bytes = vec![0x08, 0, 0, 0];
    bytes.extend_from_slice(&vni.to_be_bytes()[1..]);
    bytes.push(0);
    for part in dst_mac.split(':') {
        bytes.push(u8::from_str_radix(part, 16).with_context(|| format!("MAC {dst_mac}"))?);
    }
    ensure!(bytes.len() == 14, "MAC {dst_mac} is not 6 bytes");
    bytes.extend_from_slice(&[0x02, 0, 0, 0, 0xbe, 0xef, 0x88, 0xb5]);
    let mut payload = b"netloom crafted VXLAN frame".to_vec();
    payload.resize(INNER_PAYLOAD, 0);
    bytes.extend_from_slice(&payload);
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Counts crafted datagrams arriving at `h` (before any guard), of those that match `only`
/// (an nft match, e.g. on the interface), under the name "crafted".
fn crafted_arriving<'a>(h: &'a Host, only: &str) -> Result<NftCounters<'a>> {
    let chain = format!(
        "chain arriving {{\n type filter hook prerouting priority -500; policy accept;\n {only}udp dport 4789 udp length {CRAFTED_UDP_LEN} counter name crafted\n }}"
    );
    NftCounters::in_host(h, "inet", "nlt_vxlan", &["crafted"], &chain)
}

/// Counts the crafted inner frames reaching `container`'s eth0, under the name "crafted".
fn crafted_delivered<'a>(h: &'a Host, container: &str) -> Result<NftCounters<'a>> {
    NftCounters::in_container(
        h,
        container,
        "netdev",
        "nlt_vxlan",
        &["crafted"],
        &format!("chain ingress {{\n type filter hook ingress device \"eth0\" priority -500; policy accept;\n ether type {PROBE_ETHERTYPE} counter name crafted\n }}"),
    )
}

/// The LAN neighbour sends `FRAMES` crafted datagrams to `target`; an error unless they all
/// reached the target host (the attack ran). Returns how many arrived there and how many crafted
/// frames the container has received.
fn lan_attack(
    lan: &Host,
    target: &str,
    frame: &str,
    at_target: &NftCounters,
    delivered: &NftCounters,
) -> Result<(u64, u64)> {
    lan.exec(&unprivileged_send(target, frame)).context("sending from the LAN neighbour")?;
    let seen = wait_count(at_target, FRAMES)?;
    ensure!(
        seen >= FRAMES,
        "only {seen} of the neighbour's {FRAMES} crafted datagrams reached {target}: the attack did not run"
    );
    std::thread::sleep(Duration::from_millis(300));
    Ok((seen, delivered.get("crafted")?))
}

fn rx_packets(h: &Host, container: &str) -> Result<u64> {
    let out = h.container_exec(container, &["cat", "/sys/class/net/eth0/statistics/rx_packets"])?;
    out.trim().parse().with_context(|| format!("rx_packets of {container}: {out:?}"))
}

/// The probe tool as an unprivileged user: an attacker needs no capability for a UDP socket.
fn unprivileged_send(to: &str, frame: &str) -> Vec<String> {
    let count = FRAMES.to_string();
    [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        PROBE,
        "udp-send",
        to,
        &count,
        frame,
    ]
    .map(String::from)
    .to_vec()
}

/// With `ipv6_underlay` the hosts' tunnel endpoints are their IPv6 addresses; then only the LAN
/// neighbour attacks (the containers here have no IPv6 way out), and for the containers' attack the
/// IPv4 variant stands.
fn vxlan_scenario(c: &Cluster, firewall: &str, ipv6_underlay: bool) -> Result<()> {
    let store = UnderlayEtcd::start(c, 1)?.url(c);
    let hosts =
        c.add_hosts(vec![HostConfig::new("h1", DockerVersion::V26), HostConfig::new("h2", DockerVersion::V26)])?;
    let (h1, h2) = (&hosts[0], &hosts[1]);
    let lan = c.add_neighbour("lan")?;
    if ipv6_underlay {
        c.enable_underlay_ipv6()?;
    }
    let vtep_of = |h: &Host| if ipv6_underlay { h.underlay_ipv6().to_string() } else { h.underlay_ip().to_string() };
    for h in &hosts {
        join_overlay(h, &store, &vtep_of(h), firewall)?;
    }
    run(h1, "x1", &["--network", "ov"], &["sleep", "600"])?;
    run(h2, "y1", &["--network", "ov"], &["sleep", "600"])?;
    // Capability-less containers on the member host h2: on Docker's own bridge, and on the
    // overlay (whose egress is docker_gwbridge). Both leave masqueraded with h2's VTEP address.
    let container_attackers: &[&str] = if ipv6_underlay { &[] } else { &["evil", "evilov"] };
    if !ipv6_underlay {
        run(h2, "evil", &["--network", "bridge", "--cap-drop", "ALL"], &["sleep", "600"])?;
        run(h2, "evilov", &["--network", "ov", "--cap-drop", "ALL"], &["sleep", "600"])?;
    }
    let x1 = h1.container_ip("x1", "ov")?;
    let y1 = h2.container_ip("y1", "ov")?;
    let member_traffic = |when: &str| -> Result<()> {
        let (a, b) = (pings(h1, "x1", &y1)?, pings(h2, "y1", &x1)?);
        ensure!(a > 0 && b > 0, "{when}: members' traffic does not flow (x1 -> y1: {a}/3 replies, y1 -> x1: {b}/3)");
        Ok(())
    };
    member_traffic("before the attack")?;
    step(c, "overlay members talk");

    let frame = crafted_vxlan(VNI, &h1.container_network_field("x1", "ov", "MacAddress")?)?;
    let target = if ipv6_underlay { format!("[{}]:4789", vtep_of(h1)) } else { format!("{}:4789", vtep_of(h1)) };
    let at_target = crafted_arriving(h1, "")?;
    // On h2, what its containers send (anything not coming in on the underlay).
    let at_member = crafted_arriving(h2, "iifname != \"eth0\" ")?;
    let delivered = crafted_delivered(h1, "x1")?;
    let rx_before = rx_packets(h1, "x1")?;

    // (a) a LAN host that is no member of the overlay.
    let (seen, from_lan) = lan_attack(&lan, &target, &frame, &at_target, &delivered)?;
    step(c, &format!("LAN neighbour: {seen} datagrams reached h1, {from_lan} frames reached x1"));

    // (b) capability-less containers on the member host h2.
    let mut from_member = Vec::new();
    for &container in container_attackers {
        let sent_before = at_member.get("crafted")?;
        let delivered_before = delivered.get("crafted")?;
        h2.exec_in_container_netns(container, &unprivileged_send(&target, &frame))
            .with_context(|| format!("sending from {container}"))?;
        let sent = wait_count(&at_member, sent_before + FRAMES)? - sent_before;
        ensure!(
            sent >= FRAMES,
            "h2 saw only {sent} of {container}'s {FRAMES} crafted datagrams: the attack did not run"
        );
        std::thread::sleep(Duration::from_millis(300));
        let got = delivered.get("crafted")? - delivered_before;
        step(c, &format!("{container} on h2: {sent} datagrams left it, {got} frames reached x1"));
        from_member.push((container, got));
    }
    let rx_delta = rx_packets(h1, "x1")? - rx_before;
    let reached_h1 = at_target.get("crafted")?;
    step(c, &format!("x1's rx_packets grew by {rx_delta}; h1 saw {reached_h1} crafted datagrams in all"));
    ensure!(
        from_lan == 0 && from_member.iter().all(|(_, n)| *n == 0),
        "crafted VXLAN frames reached a container: {from_lan} of {FRAMES} from a LAN host that is no member, \
         {from_member:?} (of {FRAMES} each) from capability-less containers on member host h2; x1's rx_packets +{rx_delta}"
    );
    ensure!(rx_delta < FRAMES, "x1 received {rx_delta} packets during the attack");
    member_traffic("after the attack")?;
    if ipv6_underlay {
        return Ok(());
    }

    // Membership follows the store: a host that joins is accepted from its first frame on, and
    // one whose lease has expired is a stranger again.
    let h3 = c.add_host(HostConfig::new("h3", DockerVersion::V26))?;
    join_overlay(&h3, &store, &vtep_of(&h3), firewall)?;
    run(&h3, "z1", &["--network", "ov"], &["sleep", "600"])?;
    let z1 = h3.container_ip("z1", "ov")?;
    let (to_z1, from_z1) = (pings(h1, "x1", &z1)?, pings(&h3, "z1", &x1)?);
    ensure!(
        to_z1 > 0 && from_z1 > 0,
        "h3, which just joined, is not accepted: x1 -> z1 {to_z1}/3 replies, z1 -> x1 {from_z1}/3"
    );
    step(c, "a host that joins is accepted at once");
    // The control for what follows: the same frames from h3 while it is a member get through
    // (a member host's root is trusted with the VNI).
    let delivered_before = delivered.get("crafted")?;
    h3.exec(&unprivileged_send(&target, &frame)).context("sending from h3")?;
    let _ = wait_until(Duration::from_secs(5), Duration::from_millis(100), "h3's frames", || {
        Ok(delivered.get("crafted")? >= delivered_before + FRAMES)
    });
    let as_member = delivered.get("crafted")? - delivered_before;
    ensure!(
        as_member >= FRAMES,
        "only {as_member} of {FRAMES} frames from member h3 reached x1: the probe does not work"
    );
    let overlay = h3.plugins().into_iter().find(|p| p.name() == "loom-overlay").context("no loom-overlay on h3")?;
    overlay.sigkill()?;
    let h3_vtep = vtep_of(&h3);
    let overlay_ns = format!("--net=/run/netloom/loom-overlay/netns/ovl-{VNI}");
    wait_until(Duration::from_secs(30), Duration::from_millis(200), "h1 to forget h3", || {
        let fdb = h1.exec(&["nsenter", overlay_ns.as_str(), "bridge", "fdb", "show", "dev", "vxlan0"])?;
        Ok(!fdb.contains(&format!("dst {h3_vtep} ")))
    })?;
    // The guard is kept by the same pass that removed the FDB entry; give it a moment.
    std::thread::sleep(Duration::from_secs(1));
    let (in_before, delivered_before) = (at_target.get("crafted")?, delivered.get("crafted")?);
    h3.exec(&unprivileged_send(&target, &frame)).context("sending from h3")?;
    let arrived = wait_count(&at_target, in_before + FRAMES)? - in_before;
    ensure!(arrived >= FRAMES, "only {arrived} of h3's {FRAMES} crafted datagrams reached h1: the attack did not run");
    std::thread::sleep(Duration::from_millis(300));
    let got = delivered.get("crafted")? - delivered_before;
    step(c, &format!("h3 after its lease expired: {arrived} datagrams reached h1, {got} frames reached x1"));
    ensure!(got == 0, "{got} of {FRAMES} crafted frames from h3, a host whose lease has expired, reached x1");
    Ok(())
}

/// loom-ipam and loom-overlay on `h`, and the overlay `ov` (VNI 5300) created there. Short leases,
/// a 1 s reconcile and no grace for a host whose lease expired, so that a host that goes is
/// forgotten within seconds.
fn join_overlay(h: &Host, store: &str, vtep: &str, firewall: &str) -> Result<()> {
    let quick = ["--lease-ttl", "3", "--dead-host-grace", "1", "--reconcile-interval", "1", "--peer-grace", "0"];
    LocalOverlay::new(store)
        .advertise_addr(vtep)
        .overlay_args(&["--firewall", firewall])
        .overlay_args(&quick)
        .start(h)?;
    let vni = format!("com.docker.network.driver.overlay.vxlanid_list={VNI}");
    h.network_create("loom-overlay", "ov", &["--ipam-driver", "loom-ipam", "--subnet", "10.88.0.0/24", "-o", &vni])?;
    Ok(())
}

/// Replies to three pings from `container` on `h`.
fn pings(h: &Host, container: &str, target: &str) -> Result<u32> {
    Ok(ping_replies(&h.container_exec(container, &["sh", "-c", &format!("ping -c 3 -w 4 {target}; true")])?))
}

/// Polls a counter until it reaches `want` (or 5 s pass); its last value.
fn wait_count(counters: &NftCounters, want: u64) -> Result<u64> {
    let mut last = 0;
    let _ = wait_until(Duration::from_secs(5), Duration::from_millis(100), "the counter", || {
        last = counters.get("crafted")?;
        Ok(last >= want)
    });
    Ok(last)
}

/// How much of the VXLAN guard `h` has in `backend`: lines of `iptables-save -t raw` naming the
/// `LOOM-VXLAN` chain (the chain, its rules and its jump; both families), or nftables' `vxlan-in`
/// and `vxlan-fwd` chains; 0 when there is no guard there.
fn guard_entries(h: &Host, backend: &str) -> Result<usize> {
    Ok(match backend {
        "iptables" => ["iptables-save", "ip6tables-save"]
            .iter()
            .map(|save| Ok(h.exec(&[save, "-t", "raw"])?.lines().filter(|l| l.contains("LOOM-VXLAN")).count()))
            .sum::<Result<usize>>()?,
        _ => {
            let tables = h.exec(&["nft", "list", "tables"])?;
            if !tables.lines().any(|l| l.trim() == "table inet netloom") {
                return Ok(0);
            }
            let table = h.exec(&["nft", "list", "table", "inet", "netloom"])?;
            table.lines().filter(|l| l.contains("chain vxlan-in") || l.contains("chain vxlan-fwd")).count()
        }
    })
}

/// A member host's loom-overlay restarted on the other firewall backend (`--firewall` changed,
/// or `auto` picking another one after an upgrade): the old backend's guard goes, the new one
/// holds against the same injection from a LAN host, and the members still talk.
fn vxlan_guard_switch_scenario(c: &Cluster, from: &str, to: &str) -> Result<()> {
    let store = UnderlayEtcd::start(c, 1)?.url(c);
    let hosts =
        c.add_hosts(vec![HostConfig::new("h1", DockerVersion::V26), HostConfig::new("h2", DockerVersion::V26)])?;
    let (h1, h2) = (&hosts[0], &hosts[1]);
    let lan = c.add_neighbour("lan")?;
    for h in &hosts {
        join_overlay(h, &store, &h.underlay_ip().to_string(), from)?;
    }
    run(h1, "x1", &["--network", "ov"], &["sleep", "600"])?;
    run(h2, "y1", &["--network", "ov"], &["sleep", "600"])?;
    let (x1, y1) = (h1.container_ip("x1", "ov")?, h2.container_ip("y1", "ov")?);
    let member_traffic = |when: &str| -> Result<()> {
        let (a, b) = (pings(h1, "x1", &y1)?, pings(h2, "y1", &x1)?);
        ensure!(a > 0 && b > 0, "{when}: members' traffic does not flow (x1 -> y1: {a}/3 replies, y1 -> x1: {b}/3)");
        Ok(())
    };
    member_traffic("before the switch")?;
    let (old_before, new_before) = (guard_entries(h1, from)?, guard_entries(h1, to)?);
    ensure!(old_before > 0, "h1 has no VXLAN guard in {from} before the switch: there is nothing to switch from");
    step(c, &format!("h1's guard on {from}: {old_before} entries; on {to}: {new_before}"));

    let overlay = h1.plugins().into_iter().find(|p| p.name() == "loom-overlay").context("no loom-overlay on h1")?;
    let mut args = overlay.args().to_vec();
    let at = args.iter().position(|a| a == "--firewall").context("loom-overlay was started without --firewall")?;
    args[at + 1] = to.to_string();
    h1.restart_plugin_with("loom-overlay", &args)?;
    wait_until(Duration::from_secs(10), Duration::from_millis(100), &format!("h1's {from} guard to go"), || {
        Ok(guard_entries(h1, from)? == 0)
    })?;
    let new_after = guard_entries(h1, to)?;
    ensure!(new_after > 0, "after the switch h1 has no VXLAN guard in {to}");
    step(c, &format!("after the switch: {from} guard gone, {new_after} entries on {to}"));

    let frame = crafted_vxlan(VNI, &h1.container_network_field("x1", "ov", "MacAddress")?)?;
    let target = format!("{}:4789", h1.underlay_ip());
    let at_target = crafted_arriving(h1, "")?;
    let delivered = crafted_delivered(h1, "x1")?;
    let (seen, got) = lan_attack(&lan, &target, &frame, &at_target, &delivered)?;
    step(c, &format!("LAN neighbour after the switch: {seen} datagrams reached h1, {got} frames reached x1"));
    ensure!(
        got == 0,
        "{got} of {FRAMES} crafted frames from a LAN host that is no member reached x1 after the switch to {to}"
    );
    // The control: the same frames from member h2 get through (the frame is right, the count works).
    h2.exec(&unprivileged_send(&target, &frame)).context("sending from h2")?;
    let _ = wait_until(Duration::from_secs(5), Duration::from_millis(100), "h2's frames", || {
        Ok(delivered.get("crafted")? >= got + FRAMES)
    });
    let from_member = delivered.get("crafted")? - got;
    step(c, &format!("member h2 after the switch: {from_member} of {FRAMES} frames reached x1"));
    ensure!(
        from_member >= FRAMES,
        "only {from_member} of {FRAMES} frames from member h2 reached x1: the probe does not work"
    );
    member_traffic("after the switch")
}

scenario_tests! {
    vxlan_guard_switch_iptables_to_nftables: "hbvxsw1" => |c| vxlan_guard_switch_scenario(c, "iptables", "nftables"),
    vxlan_guard_switch_nftables_to_iptables: "hbvxsw2" => |c| vxlan_guard_switch_scenario(c, "nftables", "iptables"),
}

scenario_tests! {
    vxlan_injection_nftables: "hbvxnft" => |c| vxlan_scenario(c, "nftables", false),
    vxlan_injection_iptables: "hbvxipt" => |c| vxlan_scenario(c, "iptables", false),
    vxlan_injection_ipv6_underlay_nftables: "hbvx6nft" => |c| vxlan_scenario(c, "nftables", true),
    vxlan_injection_ipv6_underlay_iptables: "hbvx6ipt" => |c| vxlan_scenario(c, "iptables", true),
}

// ---- 3. IPv6 publishing ------------------------------------------------------------------------

fn ipv6_publish_scenario(c: &Cluster, docker: DockerVersion, firewall: &str) -> Result<()> {
    // Docker 26 with its own ip6tables rules, as Docker 27 and later have by default: dockerd's
    // IPv6 FORWARD policy must not swallow netloom's published ports.
    let dockerd_args: &[&str] = match docker {
        DockerVersion::V26 => &["--experimental", "--ip6tables"],
        DockerVersion::V20 => &[],
    };
    let h = c.add_host(HostConfig::new("h1", docker).dockerd_args(dockerd_args))?;
    let lan = c.add_neighbour("lan")?;
    c.enable_underlay_ipv6()?;
    h.start_plugin("loom-bridge", &["--firewall", firewall, "--log-level", "debug"])?;
    h.start_plugin("loom-host", &["--firewall", firewall, "--log-level", "debug"])?;
    let (v4, v6) = (h.underlay_ip().to_string(), h.underlay_ipv6().to_string());

    for (driver, net, subnet, subnet6, port) in [
        ("loom-bridge", "pb", "172.25.1.0/24", "fd00:25:1::/64", 8088u16),
        ("loom-host", "ph", "172.25.2.0/24", "fd00:25:2::/64", 9088),
    ] {
        let web = format!("web{net}");
        h.docker(&["network", "create", "-d", driver, "--ipv6", "--subnet", subnet, "--subnet", subnet6, net])?;
        let (tcp, udp, only_v6) = (format!("{port}:80"), format!("{port}:7/udp"), format!("[{v6}]:{}:80", port + 1));
        run(&h, &web, &["--network", net, "-p", &tcp, "-p", &udp, "-p", &only_v6], WEB)?;
        // UDP echo in the container's namespace (the image has no UDP server).
        let pid = h.container_pid(&web)?.to_string();
        let _echo =
            h.spawn(&format!("udp-echo-{net}"), &["nsenter", "-t", &pid, "-n", "--", PROBE, "udp-echo", "[::]:7"])?;

        let tcp_url = |addr: &str, port: u16| format!("http://{addr}:{port}/etc/hostname");
        let ask = |addr: &str| lan.exec(&[PROBE, "udp-ask", addr, "ping"]).ok().map(|s| s.trim().to_string());
        let v6_host = format!("[{v6}]");
        // IPv4 as before, then the host's IPv6 address, TCP and UDP.
        expect_answer(&format!("{driver}: TCP {v4}:{port} from the LAN"), &web, || {
            host_get(&lan, &tcp_url(&v4, port))
        })?;
        expect_answer(&format!("{driver}: UDP {v4}:{port} from the LAN"), "ping", || ask(&format!("{v4}:{port}")))?;
        expect_answer(&format!("{driver}: TCP [{v6}]:{port} from the LAN"), &web, || {
            host_get(&lan, &tcp_url(&v6_host, port))
        })?;
        expect_answer(&format!("{driver}: UDP [{v6}]:{port} from the LAN"), "ping", || ask(&format!("[{v6}]:{port}")))?;
        // -p [host IPv6]:P:80 answers there, and only there.
        expect_answer(&format!("{driver}: TCP [{v6}]:{} from the LAN", port + 1), &web, || {
            host_get(&lan, &tcp_url(&v6_host, port + 1))
        })?;
        let v4_too = host_get(&lan, &tcp_url(&v4, port + 1));
        ensure!(v4_too.is_none(), "{driver}: -p [{v6}]:{}:80 also answers on {v4}: {v4_too:?}", port + 1);
        // The kernel cannot route ::1 to a container: such a port is refused, saying why.
        let loopback6 = format!("[::1]:{}:80", port + 2);
        let refused =
            h.docker(&["run", "-d", "--name", "v6lo", "--network", net, "-p", &loopback6, IMAGE, "sleep", "600"]);
        let _ = h.docker(&["rm", "-f", "v6lo"]);
        let err = format!("{:#}", refused.err().with_context(|| format!("{driver}: -p {loopback6} was accepted"))?);
        ensure!(err.contains("[::1]"), "{driver}: -p {loopback6} refused without naming [::1]: {err}");
        step(c, &format!("{driver}: -p answers over IPv4 and IPv6, TCP and UDP"));
    }
    Ok(())
}

scenario_tests! {
    ipv6_publish_docker20_iptables: "hb6v20ipt" => |c| ipv6_publish_scenario(c, DockerVersion::V20, "iptables"),
    ipv6_publish_docker26_nftables: "hb6v26nft" => |c| ipv6_publish_scenario(c, DockerVersion::V26, "nftables"),
}

// ---- 4. one subnet, one network per host -------------------------------------------------------

fn network_id(h: &Host, network: &str) -> Result<String> {
    Ok(h.docker(&["network", "inspect", "--format", "{{.Id}}", network])?.trim().to_string())
}

/// The host's links, for "nothing half-made is left".
fn links(h: &Host) -> Result<Vec<String>> {
    let out = h.exec(&["ip", "-o", "link"])?;
    Ok(out.lines().filter_map(|l| l.split(": ").nth(1)).map(|n| n.split('@').next().unwrap_or(n).to_string()).collect())
}

/// `docker network create` that must be refused with an error naming `other` (by name or id).
fn refused_overlap(h: &Host, driver: &str, subnet: &str, name: &str, other: &str) -> Result<()> {
    let other_id = network_id(h, other)?;
    let before = links(h)?;
    let err =
        match h.docker(&["network", "create", "-d", driver, "--ipam-driver", "loom-ipam", "--subnet", subnet, name]) {
            Ok(_) => bail!("{driver} network {name} with subnet {subnet} was created although network {other} has it"),
            Err(e) => format!("{e:#}"),
        };
    let said = err.lines().find(|l| l.starts_with("stderr:")).unwrap_or(&err).to_string();
    ensure!(
        said.contains(other) || said.contains(&other_id[..12]),
        "the refusal of {name} does not name network {other} ({}): {said}",
        &other_id[..12]
    );
    eprintln!("[host-boundary] refused as expected: {said}");
    let networks = h.docker(&["network", "ls", "--format", "{{.Name}}"])?;
    ensure!(!networks.lines().any(|n| n == name), "docker kept the refused network {name}");
    let after = links(h)?;
    ensure!(before == after, "a refused network left links: before {before:?}, after {after:?}");
    Ok(())
}

fn duplicate_subnet_scenario(c: &Cluster) -> Result<()> {
    let h = c.add_host(HostConfig::new("h1", DockerVersion::V26))?;
    h.start_plugin("loom-ipam", &[])?;
    h.start_plugin("loom-bridge", &[])?;
    h.start_plugin("loom-host", &[])?;
    // Only root and its group may drive a plugin.
    for p in h.plugins() {
        let mode = fs::metadata(h.path_inside(&p.socket()))?.permissions().mode() & 0o777;
        ensure!(mode == 0o660, "{} has mode {mode:o}, want 660", p.socket());
    }
    let create = |driver: &str, subnet: &str, name: &str| {
        h.docker(&["network", "create", "-d", driver, "--ipam-driver", "loom-ipam", "--subnet", subnet, name])
            .with_context(|| format!("creating {driver} network {name} ({subnet})"))
    };

    create("loom-bridge", "172.24.1.0/24", "b1")?;
    // Started without --firewall, the drivers use nftables (the default where the kernel has it).
    h.exec(&["nft", "list", "table", "inet", "netloom"])
        .context("no nftables table of netloom's with the default backend")?;
    // (Only the one compat rule that lets marked traffic past dockerd's FORWARD policy.)
    let iptables: Vec<String> = h
        .exec(&["iptables-save"])?
        .lines()
        .filter(|l| l.contains("netloom") && !l.contains("\"netloom:compat\""))
        .map(String::from)
        .collect();
    ensure!(iptables.is_empty(), "the default backend wrote iptables rules: {iptables:#?}");
    refused_overlap(&h, "loom-bridge", "172.24.1.0/24", "b2", "b1")?;
    refused_overlap(&h, "loom-host", "172.24.1.0/24", "h2", "b1")?;
    h.docker(&["network", "rm", "b1"])?;
    create("loom-bridge", "172.24.1.0/24", "b2").context("the subnet once its network is gone")?;
    step(c, "loom-bridge: one network per subnet");

    create("loom-host", "172.24.2.0/24", "h1")?;
    refused_overlap(&h, "loom-bridge", "172.24.2.0/24", "b3", "h1")?;
    refused_overlap(&h, "loom-host", "172.24.2.0/24", "h3", "h1")?;
    h.docker(&["network", "rm", "h1"])?;
    create("loom-bridge", "172.24.2.0/24", "b3").context("loom-host's subnet once its network is gone")?;
    step(c, "loom-host and loom-bridge: one network per subnet");

    // The networks that exist work.
    run(&h, "c1", &["--network", "b2"], &["sleep", "600"])?;
    run(&h, "c2", &["--network", "b3"], &["sleep", "600"])?;
    h.docker(&["rm", "-f", "c1", "c2"])?;
    h.docker(&["network", "rm", "b2", "b3"])?;
    Ok(())
}

#[test]
fn duplicate_subnets_refused() {
    scenario("hbdup", duplicate_subnet_scenario);
}

// ---- 5. --internal loom-host and loom-macvlan --------------------------------------------------

/// Replies `container` gets to two pings of `target` (0 when it has no route).
fn container_ping(h: &Host, container: &str, target: &str) -> Result<u32> {
    Ok(ping_replies(&h.container_exec(container, &["sh", "-c", &format!("ping -c 2 -w 3 {target} 2>&1; true")])?))
}

fn host_ping(h: &Host, target: &str) -> Result<u32> {
    Ok(ping_replies(&h.sh(&format!("busybox ping -c 2 -w 3 {target} 2>&1; true"))?))
}

type Probe<'a> = (String, Box<dyn Fn() -> Result<u32> + Send + Sync + 'a>);

/// Runs the probes side by side (each waits out its timeout when nothing answers); the replies
/// each got.
fn replies_of(probes: Vec<Probe>) -> Result<Vec<(String, u32)>> {
    std::thread::scope(|s| {
        let running: Vec<_> = probes.iter().map(|(what, probe)| (what, s.spawn(probe))).collect();
        running
            .into_iter()
            .map(|(what, t)| Ok((what.clone(), t.join().map_err(|_| anyhow::anyhow!("{what} panicked"))??)))
            .collect()
    })
}

fn no_default_route(h: &Host, container: &str) -> Result<()> {
    let routes = h.container_exec(container, &["ip", "route"])?;
    ensure!(!routes.contains("default"), "{container} on an internal network has a default route:\n{routes}");
    Ok(())
}

/// An attacker with NET_ADMIN in its own namespace adds the way out the network did not give it.
fn add_default_route(h: &Host, container: &str, via: &str) -> Result<()> {
    h.container_exec(
        container,
        &["sh", "-c", &format!("ip route add default via {via} dev eth0 onlink || ip route add default dev eth0")],
    )
    .with_context(|| format!("adding a default route in {container}"))?;
    Ok(())
}

fn internal_scenario(c: &Cluster) -> Result<()> {
    let h = c.add_host(HostConfig::new("h1", DockerVersion::V26))?;
    let lan = c.add_neighbour("lan")?;
    h.start_plugin("loom-host", &["--log-level", "debug"])?;
    h.start_plugin("loom-macvlan", &["--log-level", "debug"])?;
    let (host_ip, lan_ip) = (h.underlay_ip().to_string(), lan.underlay_ip().to_string());
    // The neighbour routes loom-host's subnets to the host (as a LAN using loom-host would) and
    // has an address in the internal macvlan network's subnet, on the segment its parent is on.
    lan.exec(&["ip", "route", "add", "172.23.0.0/16", "via", &host_ip])?;
    lan.exec(&["ip", "addr", "add", "10.249.0.200/24", "dev", "eth0"])?;
    // What arrives at the neighbour from the start, per internal container (so a failure says
    // which one got out) and from the open networks.
    let at_lan = NftCounters::in_host(
        &lan,
        "inet",
        "nlt_internal",
        &["from_i1", "from_i2", "from_n1", "from_n2", "from_open"],
        r#"
  chain arriving {
    type filter hook prerouting priority -500; policy accept;
    ip saddr 172.23.1.11 counter name from_i1
    ip saddr 172.23.1.12 counter name from_i2
    ip saddr 10.249.0.11 counter name from_n1
    ip saddr 10.249.0.12 counter name from_n2
    ip saddr { 172.23.2.0/24, 10.250.0.64/28 } counter name from_open
  }"#,
    )?;
    let at_host = NftCounters::in_host(
        &h,
        "inet",
        "nlt_internal",
        &["internal_out"],
        "  chain arriving {\n type filter hook prerouting priority -500; policy accept;\n ip saddr 172.23.1.0/24 ip daddr != 172.23.1.0/24 counter name internal_out\n }",
    )?;

    h.docker(&["network", "create", "-d", "loom-host", "--internal", "--subnet", "172.23.1.0/24", "lhi"])?;
    h.docker(&["network", "create", "-d", "loom-host", "--subnet", "172.23.2.0/24", "lho"])?;
    h.network_create("loom-macvlan", "mvi", &["--internal", "-o", "parent=eth0", "--subnet", "10.249.0.0/24"])?;
    let (gateway, range) = (Cluster::gateway().to_string(), "10.250.0.64/28");
    let segment = ["--subnet", "10.250.0.0/24", "--gateway", &gateway, "--ip-range", range];
    h.network_create("loom-macvlan", "mvo", &[&["-o", "parent=eth0"][..], &segment].concat())?;
    let admin = ["--cap-add", "NET_ADMIN"];
    run(&h, "i1", &[&["--network", "lhi", "--ip", "172.23.1.11"][..], &admin[..]].concat(), &["sleep", "600"])?;
    run(&h, "i2", &["--network", "lhi", "--ip", "172.23.1.12"], &["sleep", "600"])?;
    run(&h, "o1", &["--network", "lho"], &["sleep", "600"])?;
    run(&h, "n1", &[&["--network", "mvi", "--ip", "10.249.0.11"][..], &admin[..]].concat(), &["sleep", "600"])?;
    run(&h, "n2", &["--network", "mvi", "--ip", "10.249.0.12"], &["sleep", "600"])?;
    run(&h, "m1", &["--network", "mvo"], &["sleep", "600"])?;
    let (i1, i2) = (h.container_ip("i1", "lhi")?, h.container_ip("i2", "lhi")?);
    let o1 = h.container_ip("o1", "lho")?;

    // The paths that must exist: inside each internal network, and out of the open ones.
    ensure!(container_ping(&h, "i1", &i2)? > 0, "loom-host --internal: i1 cannot reach i2 on its own network");
    ensure!(
        container_ping(&h, "n1", "10.249.0.12")? > 0,
        "loom-macvlan --internal: n1 cannot reach n2 on its own network"
    );
    ensure!(container_ping(&h, "o1", &lan_ip)? > 0, "loom-host: o1 cannot reach the LAN neighbour");
    ensure!(host_ping(&lan, &o1)? > 0, "loom-host: the LAN neighbour cannot reach o1");
    ensure!(container_ping(&h, "m1", &lan_ip)? > 0, "loom-macvlan: m1 cannot reach the LAN neighbour");
    ensure!(at_lan.get("from_open")? > 0, "the neighbour counted nothing from the open networks");
    step(c, "internal networks work inside, open ones reach the LAN");

    // No way out as given, then not even with a route the attacker adds itself.
    for container in ["i1", "i2", "n1", "n2"] {
        no_default_route(&h, container)?;
    }
    let lan_ip = lan_ip.as_str();
    let mut answers = replies_of(vec![
        (format!("i1 -> {lan_ip}"), Box::new(|| container_ping(&h, "i1", lan_ip))),
        (format!("i2 -> {lan_ip}"), Box::new(|| container_ping(&h, "i2", lan_ip))),
        ("n1 -> 10.249.0.200".into(), Box::new(|| container_ping(&h, "n1", "10.249.0.200"))),
        ("n2 -> 10.249.0.200".into(), Box::new(|| container_ping(&h, "n2", "10.249.0.200"))),
    ])?;
    add_default_route(&h, "i1", "169.254.1.1")?;
    add_default_route(&h, "n1", "10.249.0.200")?;
    let before = at_host.get("internal_out")?;
    answers.extend(replies_of(vec![
        (format!("i1 -> {lan_ip} with its own default route"), Box::new(|| container_ping(&h, "i1", lan_ip))),
        (format!("n1 -> {lan_ip} with its own default route"), Box::new(|| container_ping(&h, "n1", lan_ip))),
        (format!("neighbour -> i1 {i1}"), Box::new(|| host_ping(&lan, &i1))),
        ("neighbour -> n1 10.249.0.11".into(), Box::new(|| host_ping(&lan, "10.249.0.11"))),
    ])?);
    let i1_sent = at_host.get("internal_out")? - before;
    let mut arrived = at_lan.read()?;
    arrived.remove("from_open");
    step(c, &format!("replies: {answers:?}; packets that reached the neighbour: {arrived:?}; i1's probes seen by the host: {i1_sent}"));
    ensure!(i1_sent > 0, "i1's packets with its own default route never reached the host: the attack did not run");
    ensure!(
        arrived.values().all(|n| *n == 0) && answers.iter().all(|(_, n)| *n == 0),
        "--internal networks reach off the network: packets that reached the LAN neighbour from i1, i2 (loom-host) and \
         n1, n2 (loom-macvlan): {arrived:?}; replies {answers:?}"
    );
    ensure!(container_ping(&h, "i1", &i2)? > 0, "i1 lost its own network");
    Ok(())
}

#[test]
fn internal_host_and_macvlan() {
    scenario("hbinternal", internal_scenario);
}
