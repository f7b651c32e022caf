//! Container names across hosts on Docker 26 without swarm: two hosts with loom-ipam and a
//! local-scope loom-overlay over an etcd in the underlay, each dockerd started with `--dns <its
//! own underlay address>`, where loom-overlay answers; a stand-in upstream resolver in the
//! underlay knows `outside.example`.
//! - `ping NAME`, `ping NAME.NETWORK` and `ping ALIAS` across hosts both ways, at the right
//!   address (ping's and nslookup's);
//! - a container on another loom-overlay network of the same host, and one on Docker's default
//!   bridge (which asks the DNS address directly), resolve the outside but none of those names;
//! - the DNS address answers a container's direct query, and no LAN host (a neighbour, the other
//!   host's own namespace): 0 answers, not even for outside names;
//! - a removed container stops resolving and a new one starts resolving on the other host
//!   (measured and printed; the 1 s target is the benchmark's, 3 s asserted here);
//! - outside names are forwarded upstream.
//!
//! Docker 20.10 global-scope networks keep Docker's own names: overlay_driver.rs's global scenario
//! fetches by name across hosts both ways. Needs `cargo build --release --workspace --bins`.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use netloom_tests::{
    scenario, AskFrom, Cluster, DnsProbe, DnsUpstream, DockerVersion, Host, HostConfig, LocalOverlay, UnderlayEtcd,
    EMBEDDED_RESOLVER, IMAGE,
};

const PROBE: &str = env!("CARGO_BIN_EXE_netloom-probe");
const OUTSIDE: &str = "outside.example";
const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(10, 123, 45, 67);
const NET: &str = "names";
const APART: &str = "apart";
/// A name that comes or goes must do so on the other host within this (target: 1 s).
const BOUND: Duration = Duration::from_secs(3);

fn step(t0: Instant, what: &str) {
    eprintln!("[overlay-dns] {:6.2}s {what}", t0.elapsed().as_secs_f64());
}

/// Where `h`'s loom-overlay answers DNS (the default: its advertise address, port 53).
fn dns_addr(h: &Host) -> String {
    format!("{}:53", h.underlay_ip())
}

fn sleeper(h: &Host, name: &str, network: &str, extra: &[&str]) -> Result<IpAddr> {
    let mut argv = vec!["run", "-d", "--name", name, "--network", network];
    argv.extend_from_slice(extra);
    argv.extend_from_slice(&[IMAGE, "sleep", "600"]);
    h.docker(&argv).with_context(|| format!("starting {name} on {}", h.name()))?;
    Ok(h.container_ip(name, network)?.parse()?)
}

/// The addresses busybox's nslookup (A only, through Docker's resolver) prints for `name`; none
/// when it finds nothing (it then exits 1).
fn nslookup(h: &Host, container: &str, name: &str) -> Result<Vec<IpAddr>> {
    let out = h.container_exec(container, &["sh", "-c", &format!("nslookup -type=a {name} 2>&1; true")])?;
    ensure!(out.contains("Server:"), "nslookup {name} in {container} did not run: {out}");
    let answers = out.lines().skip_while(|l| !l.starts_with("Name:"));
    Ok(answers
        .filter(|l| l.starts_with("Address"))
        .filter_map(|l| l.split_once(':')?.1.split_whitespace().next()?.parse().ok())
        .collect())
}

/// `ping -c1 name` from `container` answers, at `want` (the address ping resolved).
fn ping_name(h: &Host, container: &str, name: &str, want: IpAddr) -> Result<()> {
    let out = h
        .container_exec(container, &["ping", "-c", "1", "-W", "2", name])
        .with_context(|| format!("{container} on {} cannot ping {name}", h.name()))?;
    let resolved = out.split(['(', ')']).nth(1).unwrap_or_default();
    ensure!(resolved == want.to_string(), "{container} resolved {name} to {resolved:?}, want {want}: {out}");
    Ok(())
}

fn dns_scenario(c: &Cluster) -> Result<()> {
    let t0 = Instant::now();
    let etcd = UnderlayEtcd::start(c, 1)?;
    let store = etcd.url(c);
    let upstream = DnsUpstream::start(c, PROBE, &[(OUTSIDE, OUTSIDE_IP)])?;
    let config = |name: &str| HostConfig::new(name, DockerVersion::V26).dns_on_own_address();
    let hosts = c.add_hosts(vec![config("n1"), config("n2")])?;
    let (n1, n2) = (&hosts[0], &hosts[1]);
    let resolv_conf = upstream.resolv_conf().display().to_string();
    for h in [n1, n2] {
        LocalOverlay::new(&store).overlay_args(&["--dns-resolv-conf", &resolv_conf]).start(h)?;
        let vni = "com.docker.network.driver.overlay.vxlanid_list=5600";
        h.network_create("loom-overlay", NET, &["--ipam-driver", "loom-ipam", "--subnet", "10.77.0.0/24", "-o", vni])?;
    }
    let vni = "com.docker.network.driver.overlay.vxlanid_list=5601";
    n1.network_create("loom-overlay", APART, &["--ipam-driver", "loom-ipam", "--subnet", "10.78.0.0/24", "-o", vni])?;
    let ana = sleeper(n1, "ana", NET, &["--network-alias", "anna"])?;
    let bob = sleeper(n2, "bob", NET, &["--network-alias", "robert"])?;
    let carl = sleeper(n1, "carl", APART, &[])?;
    step(t0, &format!("ana {ana} on n1, bob {bob} on n2 ({NET}); carl {carl} on n1 ({APART})"));

    // ---- names across hosts, both ways ----
    let probe = DnsProbe::new(PROBE);
    let ana_asks = AskFrom::Container(n1, "ana");
    let seen = probe.wait(ana_asks, EMBEDDED_RESOLVER, "bob", true, BOUND)?;
    ensure!(seen.reply.addresses == vec![bob], "ana's resolver answered bob with {:?}", seen.reply);
    for (h, from, names, want) in
        [(n1, "ana", ["bob", "bob.names", "robert"], bob), (n2, "bob", ["ana", "ana.names", "anna"], ana)]
    {
        for name in names {
            ping_name(h, from, name, want)?;
        }
    }
    ensure!(nslookup(n1, "ana", "bob")? == vec![bob], "nslookup bob from ana: {:?}", nslookup(n1, "ana", "bob"));
    ensure!(nslookup(n2, "bob", "ANA.Names.")? == vec![ana], "nslookup ANA.Names. from bob");
    ensure!(nslookup(n1, "ana", OUTSIDE)? == vec![IpAddr::from(OUTSIDE_IP)], "{OUTSIDE} from ana");
    step(t0, "name, name.network and alias answer across hosts both ways, at the right address; the outside too");

    // ---- another network of the same host: the outside, none of those names ----
    ensure!(nslookup(n1, "carl", OUTSIDE)? == vec![IpAddr::from(OUTSIDE_IP)], "carl cannot resolve {OUTSIDE}");
    for name in ["bob", "bob.names", "robert", "ana", "anna", "ana.names"] {
        let got = nslookup(n1, "carl", name)?;
        ensure!(got.is_empty(), "carl (on {APART}) resolved {name} to {got:?}");
    }
    let direct = probe.ask(AskFrom::Container(n1, "carl"), &dns_addr(n1), "bob")?;
    ensure!(direct.addresses.is_empty(), "carl asking {} for bob got {direct:?}", dns_addr(n1));
    step(t0, &format!("carl resolves {OUTSIDE} but no name of {NET} (direct query: {direct:?})"));

    // ---- a default-bridge container asks the DNS address straight (Docker copies dockerd's --dns
    // into its resolv.conf): the outside is forwarded for it, no name of NET is answered ----
    sleeper(n1, "dora", "bridge", &[])?;
    ensure!(nslookup(n1, "dora", OUTSIDE)? == vec![IpAddr::from(OUTSIDE_IP)], "dora cannot resolve {OUTSIDE}");
    let mut leaked = 0;
    for name in ["bob", "bob.names", "robert", "ana"] {
        leaked += nslookup(n1, "dora", name)?.len();
        leaked += probe.ask(AskFrom::Container(n1, "dora"), &dns_addr(n1), name)?.addresses.len();
    }
    ensure!(leaked == 0, "dora (default bridge) got {leaked} answers for names of {NET}");
    step(t0, &format!("a default-bridge container resolves {OUTSIDE} through the DNS address, no name of {NET}"));

    // ---- the DNS address answers containers only ----
    let from_ana = probe.ask(ana_asks, &dns_addr(n1), "bob")?;
    ensure!(from_ana.addresses == vec![bob], "ana asking {} directly for bob got {from_ana:?}", dns_addr(n1));
    let lan = c.add_neighbour("lan")?;
    let mut answers = 0;
    for (who, from) in [("the LAN neighbour", AskFrom::Host(&lan)), ("n2's own namespace", AskFrom::Host(n2))] {
        for name in ["bob", "bob.names", "ana", OUTSIDE] {
            let reply = probe.ask(from, &dns_addr(n1), name)?;
            eprintln!("[overlay-dns] {who} asking {} for {name}: {reply:?}", dns_addr(n1));
            answers += reply.addresses.len();
        }
    }
    ensure!(answers == 0, "hosts that are no container got {answers} answers");
    step(t0, "a container's direct query is answered; a LAN host and the other host get 0 answers");

    // ---- a removed container stops resolving, a new one starts, on the other host ----
    let gone =
        probe.during(ana_asks, EMBEDDED_RESOLVER, ("bob", false), BOUND * 2, || n2.docker(&["rm", "-f", "bob"]))?;
    ensure!(nslookup(n1, "ana", "robert")?.is_empty(), "bob's alias still resolves");
    let arrival =
        probe.during(ana_asks, EMBEDDED_RESOLVER, ("bob2", true), BOUND * 2, || sleeper(n2, "bob2", NET, &[]))?;
    let bob2 = arrival.outcome;
    ensure!(arrival.seen.reply.addresses == vec![bob2], "bob2 resolved to {:?}, it has {bob2}", arrival.seen.reply);
    eprintln!(
        "[overlay-dns] measured: bob stopped resolving on n1 {} ms after `docker rm -f` started on n2 ({} ms after \
         it returned; 0: before); bob2 resolved on n1 {} ms after `docker run` started on n2 ({} ms after it \
         returned); first cross-host answer {} ms",
        gone.since_start.as_millis(),
        gone.since_return.as_millis(),
        arrival.since_start.as_millis(),
        arrival.since_return.as_millis(),
        seen.after.as_millis(),
    );
    ensure!(gone.since_return < BOUND, "bob kept resolving for {:?} after its removal", gone.since_return);
    ensure!(arrival.since_return < BOUND, "bob2 resolved only {:?} after docker run returned", arrival.since_return);
    ping_name(n1, "ana", "bob2", bob2)?;
    step(t0, "removal and arrival seen on the other host");

    n1.docker(&["rm", "-f", "ana", "carl", "dora"])?;
    n2.docker(&["rm", "-f", "bob2"])?;
    n1.docker(&["network", "rm", NET, APART])?;
    n2.docker(&["network", "rm", NET])?;
    n1.plugins_still_running()?;
    n2.plugins_still_running()?;
    step(t0, "removed");
    Ok(())
}

#[test]
fn overlay_dns_docker26() {
    scenario("ovdns", dns_scenario);
}
