//! TCP throughput with iperf3, run from the host inside the containers' network namespaces (the
//! image has no iperf3): container to container on one host (loom-bridge, the built-in bridge and
//! a bare veth pair), a published port reached at the host's 127.0.0.1 (loom-bridge's kernel DNAT
//! against the built-in bridge's docker-proxy), and cross-host (loom-overlay encrypted and plain,
//! the built-in overlay, a bare VXLAN tunnel between the same hosts and the bare underlay). Paths
//! are interleaved per round; the median is reported.

use std::net::Ipv4Addr;

use anyhow::Result;
use netloom_tests::{Cluster, DockerVersion, Host, HostConfig, NsProc, IMAGE};

use crate::config::Config;
use crate::docker_util::{
    create_encrypted_overlay, create_overlay_networks, iperf3_gbits, overlay_hosts, round_order, spawn_iperf3_server,
    Netns, BUILTIN_OVERLAY, IPERF_PORT, LOOM_OVERLAY, LOOM_OVERLAY_ENCRYPTED,
};
use crate::report::{Report, Row, Target};
use crate::stats::Samples;

const UNIT: &str = "Gbit/s";
const LOOM_BRIDGE_NET: &str = "tp-loom";
const BUILTIN_BRIDGE_NET: &str = "tp-bridge";
/// loom-bridge with the iptables backend (a second instance), next to the default (nftables).
const LOOM_IPT_NET: &str = "tp-loom-ipt";
/// Host ports at 127.0.0.1 the two bridge networks' servers are published on.
const LOOM_PUBLISHED: u16 = 15201;
const BUILTIN_PUBLISHED: u16 = 15202;
const LOOM_IPT_PUBLISHED: u16 = 15203;
/// The two ends of the bare veth pair: namespaces made inside the host.
const BARE_CLIENT_NS: &str = "bare1";
const BARE_SERVER_NS: &str = "bare2";
const BARE_SERVER_IP: &str = "10.99.0.2";
/// Where the iperf3 server in the second host's own namespace listens (the underlay path).
const UNDERLAY_PORT: u16 = 5202;
/// The bare VXLAN tunnel between the two hosts: a namespace on each, holding only the VXLAN
/// link (its socket on the host's underlay, on a port and VNI no driver uses), static entries.
const BARE_VXLAN_NS: &str = "barevx";
const BARE_VXLAN_PORT: u16 = 4799;
const BARE_VXLAN_VNI: u32 = 9999;
const BARE_VXLAN_SUBNET: &str = "10.98.0";
/// Below this share of the plain overlay's throughput, encryption is reported as under its floor.
const ENCRYPTED_FLOOR: f64 = 0.2;

/// One way through the network: iperf3's client namespace and its target.
struct Path<'a> {
    name: &'static str,
    host: &'a Host,
    client: Netns,
    target: String,
    port: u16,
}

pub fn run(config: &Config, report: &mut Report) -> Result<()> {
    one_host(config, report)?;
    cross_host(config, report)
}

fn one_host(config: &Config, report: &mut Report) -> Result<()> {
    let c = Cluster::new("bntput")?;
    let h = c.add_host(HostConfig::new("h1", DockerVersion::V20).dockerd_args(&["--log-level=warn"]))?;
    h.start_plugin("loom-bridge", &["--log-level", "warn"])?;
    h.start_plugin_as("loom-bridge", "loom-bridge-ipt", &["--firewall", "iptables", "--log-level", "warn"])?;
    h.docker(&["network", "create", "-d", "loom-bridge", "--subnet", "172.30.1.0/24", LOOM_BRIDGE_NET])?;
    h.docker(&["network", "create", "-d", "loom-bridge-ipt", "--subnet", "172.30.3.0/24", LOOM_IPT_NET])?;
    h.docker(&["network", "create", "-d", "bridge", "--subnet", "172.30.2.0/24", BUILTIN_BRIDGE_NET])?;
    // iperf3 servers, kept running until the end of the measurement.
    let mut servers = Vec::new();
    let mut paths = Vec::new();
    for (network, published) in [(LOOM_BRIDGE_NET, LOOM_PUBLISHED), (BUILTIN_BRIDGE_NET, BUILTIN_PUBLISHED)] {
        let (server, path_c2c, path_published) = bridge_paths(&h, network, published)?;
        servers.push(server);
        paths.push(path_c2c);
        paths.push(path_published);
    }
    let (server, path_c2c, _) = bridge_paths(&h, LOOM_IPT_NET, LOOM_IPT_PUBLISHED)?;
    servers.push(server);
    paths.push(path_c2c);
    servers.push(bare_veth_pair(&h)?);
    paths.push(Path {
        name: "bare veth pair",
        host: &h,
        client: Netns::Named(BARE_CLIENT_NS.into()),
        target: BARE_SERVER_IP.into(),
        port: IPERF_PORT,
    });
    let s = measure(config, &paths)?;
    let (loom, loom_published, builtin, builtin_published, loom_ipt, bare) = (&s[0], &s[1], &s[2], &s[3], &s[4], &s[5]);
    let c2c = "TCP container to container";
    compare(
        report,
        [
            (
                format!("{c2c}, loom-bridge nftables (default) vs iptables backend"),
                loom,
                "iptables",
                loom_ipt,
                Target::None,
            ),
            (
                format!("{c2c}, loom-bridge iptables backend vs bridge (Docker 20.10)"),
                loom_ipt,
                "bridge",
                builtin,
                Target::None,
            ),
            (format!("{c2c}, loom-bridge vs bridge (Docker 20.10)"), loom, "bridge", builtin, Target::AtLeast(0.95)),
            (format!("{c2c}, loom-bridge vs bare veth pair"), loom, "bare veth", bare, Target::AtLeast(0.9)),
            (format!("{c2c}, bridge (Docker 20.10) vs bare veth pair"), builtin, "bare veth", bare, Target::None),
            (
                "TCP to a port published at 127.0.0.1, loom-bridge vs bridge (docker-proxy, Docker 20.10)".to_string(),
                loom_published,
                "bridge",
                builtin_published,
                Target::AtLeast(1.1),
            ),
        ],
    );
    Ok(())
}

/// On `network`: a server container (its iperf3 port published at 127.0.0.1:`published`) and a
/// client container; the server process and the container-to-container and published-port paths.
fn bridge_paths<'a>(h: &'a Host, network: &'static str, published: u16) -> Result<(NsProc, Path<'a>, Path<'a>)> {
    let (server, client) = (format!("srv-{network}"), format!("cli-{network}"));
    let publish = format!("127.0.0.1:{published}:{IPERF_PORT}");
    h.docker(&["run", "-d", "--name", &server, "--network", network, "-p", &publish, IMAGE, "sleep", "3600"])?;
    h.docker(&["run", "-d", "--name", &client, "--network", network, IMAGE, "sleep", "3600"])?;
    let iperf = spawn_iperf3_server(h, &format!("iperf-{network}"), &Netns::of_container(h, &server)?, IPERF_PORT)?;
    let c2c = Path {
        name: network,
        host: h,
        client: Netns::of_container(h, &client)?,
        target: h.container_ip(&server, network)?,
        port: IPERF_PORT,
    };
    let name = if network == LOOM_BRIDGE_NET { "loom-bridge published port" } else { "bridge published port" };
    let at_localhost =
        Path { name, host: h, client: Netns::Host, target: Ipv4Addr::LOCALHOST.to_string(), port: published };
    Ok((iperf, c2c, at_localhost))
}

/// Two namespaces inside the host joined by one veth pair (no bridge, no firewall), with an
/// iperf3 server on the second: the limit a container-to-container path can reach.
fn bare_veth_pair(h: &Host) -> Result<NsProc> {
    h.sh(&format!(
        "set -e
         ip netns add {BARE_CLIENT_NS}
         ip netns add {BARE_SERVER_NS}
         ip link add bv1 netns {BARE_CLIENT_NS} type veth peer name bv2 netns {BARE_SERVER_NS}
         ip -n {BARE_CLIENT_NS} addr add 10.99.0.1/24 dev bv1
         ip -n {BARE_SERVER_NS} addr add {BARE_SERVER_IP}/24 dev bv2
         for ns in {BARE_CLIENT_NS} {BARE_SERVER_NS}; do ip -n $ns link set lo up; done
         ip -n {BARE_CLIENT_NS} link set bv1 up
         ip -n {BARE_SERVER_NS} link set bv2 up"
    ))?;
    spawn_iperf3_server(h, "iperf-bare", &Netns::Named(BARE_SERVER_NS.into()), IPERF_PORT)
}

fn cross_host(config: &Config, report: &mut Report) -> Result<()> {
    let c = Cluster::new("bntpov")?;
    let hosts = overlay_hosts(&c)?;
    let (h1, h2) = (&*hosts[0], &*hosts[1]);
    create_overlay_networks(h1)?;
    let mut networks = vec![BUILTIN_OVERLAY, LOOM_OVERLAY];
    // The plain rows are measured even where encrypted networks cannot be made.
    match create_encrypted_overlay(h1) {
        Ok(()) => networks.push(LOOM_OVERLAY_ENCRYPTED),
        Err(e) => report.note(format!("loom-overlay encrypted not measured: {e:#}")),
    }
    // iperf3 servers, kept running until the end of the measurement.
    let mut servers = vec![spawn_iperf3_server(h2, "iperf-underlay", &Netns::Host, UNDERLAY_PORT)?];
    servers.push(bare_vxlan(h1, h2)?);
    let mut paths = vec![
        Path {
            name: "underlay",
            host: h1,
            client: Netns::Host,
            target: h2.underlay_ip().to_string(),
            port: UNDERLAY_PORT,
        },
        Path {
            name: "bare VXLAN",
            host: h1,
            client: Netns::Named(BARE_VXLAN_NS.into()),
            target: format!("{BARE_VXLAN_SUBNET}.2"),
            port: IPERF_PORT,
        },
    ];
    for network in networks {
        let (server, client) = (format!("srv-{network}"), format!("cli-{network}"));
        h2.docker(&["run", "-d", "--name", &server, "--network", network, IMAGE, "sleep", "3600"])?;
        h1.docker(&["run", "-d", "--name", &client, "--network", network, IMAGE, "sleep", "3600"])?;
        servers.push(spawn_iperf3_server(
            h2,
            &format!("iperf-{network}"),
            &Netns::of_container(h2, &server)?,
            IPERF_PORT,
        )?);
        paths.push(Path {
            name: network,
            host: h1,
            client: Netns::of_container(h1, &client)?,
            target: h2.container_ip(&server, network)?,
            port: IPERF_PORT,
        });
    }
    let s = measure(config, &paths)?;
    let (underlay, vxlan, builtin, loom) = (&s[0], &s[1], &s[2], &s[3]);
    let what = "TCP cross-host";
    compare(
        report,
        [
            (format!("{what}, loom-overlay vs overlay (Docker 20.10)"), loom, "overlay", builtin, Target::AtLeast(1.0)),
            (format!("{what}, loom-overlay vs bare underlay"), loom, "underlay", underlay, Target::AtLeast(0.85)),
            (format!("{what}, overlay (Docker 20.10) vs bare underlay"), builtin, "underlay", underlay, Target::None),
            (format!("{what}, bare VXLAN tunnel vs bare underlay"), vxlan, "underlay", underlay, Target::None),
            (format!("{what}, loom-overlay vs bare VXLAN tunnel"), loom, "bare VXLAN", vxlan, Target::None),
        ],
    );
    if let Some(encrypted) = s.get(4) {
        let name = "loom-overlay encrypted (userspace WireGuard)";
        compare(
            report,
            [
                (format!("{what}, {name} vs loom-overlay plain"), encrypted, "plain", loom, Target::AtLeast(0.5)),
                (format!("{what}, {name} vs bare underlay"), encrypted, "underlay", underlay, Target::None),
            ],
        );
        let share = encrypted.median() / loom.median();
        if share < ENCRYPTED_FLOOR {
            report.note(format!(
                "loom-overlay encrypted runs at {share:.2}x the plain overlay, under its floor of {ENCRYPTED_FLOOR}x"
            ));
        }
    }
    Ok(())
}

/// The kernel's VXLAN alone between the two hosts, the most any VXLAN overlay can reach on this
/// underlay: on each host a namespace holding one VXLAN link (made in the host's namespace, so
/// its socket stays on the underlay, then moved), MTU as loom-overlay's networks, static FDB and
/// neighbour entries for the other end; an iperf3 server in the second host's.
fn bare_vxlan(h1: &Host, h2: &Host) -> Result<NsProc> {
    let hosts = [h1, h2];
    for (i, h) in hosts.iter().enumerate() {
        let other = hosts[1 - i];
        let (mine, theirs) = (i + 1, 2 - i);
        h.sh(&format!(
            "set -e
             ip netns add {BARE_VXLAN_NS}
             ip -n {BARE_VXLAN_NS} link set lo up
             ip link add barevx type vxlan id {BARE_VXLAN_VNI} dstport {BARE_VXLAN_PORT} local {local} dev {dev} nolearning
             ip link set barevx netns {BARE_VXLAN_NS}
             ip -n {BARE_VXLAN_NS} link set barevx address 02:42:0a:62:00:0{mine} mtu 1450 up
             ip -n {BARE_VXLAN_NS} addr add {BARE_VXLAN_SUBNET}.{mine}/24 dev barevx
             ip netns exec {BARE_VXLAN_NS} bridge fdb append 02:42:0a:62:00:0{theirs} dev barevx dst {remote} self permanent
             ip -n {BARE_VXLAN_NS} neigh replace {BARE_VXLAN_SUBNET}.{theirs} lladdr 02:42:0a:62:00:0{theirs} dev barevx nud permanent",
            local = h.underlay_ip(),
            dev = h.underlay_iface(),
            remote = other.underlay_ip(),
        ))?;
    }
    spawn_iperf3_server(h2, "iperf-barevx", &Netns::Named(BARE_VXLAN_NS.into()), IPERF_PORT)
}

/// Throughput rows, each (what, ours, anchor's name, anchor, target), by the samples' medians.
fn compare<const N: usize>(report: &mut Report, rows: [(String, &Samples, &str, &Samples, Target); N]) {
    for (what, ours, anchor_name, anchor, target) in rows {
        report.push(Row::vs("throughput", what, ours.median(), UNIT, anchor_name, anchor.median(), target));
    }
}

/// `iperf_rounds()` runs of every path, the paths in turn within a round (alternating
/// direction); Gbit/s per path, in the paths' order.
fn measure(config: &Config, paths: &[Path]) -> Result<Vec<Samples>> {
    let mut samples = vec![Samples::new(); paths.len()];
    for round in 0..config.iperf_rounds() {
        for i in round_order(round, paths.len()) {
            let p = &paths[i];
            let gbits = iperf3_gbits(p.host, &p.client, &p.target, p.port, config.iperf_seconds())?;
            eprintln!(
                "[bench] throughput round {}/{}: {:<28} {gbits:.2} {UNIT}",
                round + 1,
                config.iperf_rounds(),
                p.name
            );
            samples[i].push(gbits);
        }
    }
    Ok(samples)
}
