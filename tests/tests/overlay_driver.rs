//! loom-overlay against real dockerd on several hosts sharing an etcd in the underlay: Docker
//! 20.10 in global scope (`--cluster-store`), Docker 26 in local scope (every host creates the
//! network; addresses from loom-ipam over the same etcd), a 3-node etcd cluster losing a member,
//! an etcd outage, driver crashes, and bad input. Needs `cargo build --release --workspace --bins`.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use netloom_tests::{
    no_ping, ping, scenario, wait_until, Cluster, DockerVersion, Host, HostConfig, LocalOverlay, UnderlayEtcd, IMAGE,
};

const NETNS_DIR: &str = "/run/netloom/loom-overlay/netns";
const LOG: &str = "info,loom_overlay=debug,netloom_dataplane=debug";
const WEB: &[&str] = &["httpd", "-f", "-p", "80", "-h", "/"];

// ---- helpers ----------------------------------------------------------------------------------

fn run_container(h: &Host, name: &str, args: &[&str]) -> Result<()> {
    let mut argv = vec!["run", "-d", "--name", name, "--hostname", name];
    argv.extend_from_slice(args);
    h.docker(&argv).with_context(|| format!("starting {name} on {}", h.name()))?;
    Ok(())
}

fn web(h: &Host, name: &str, network: &str, extra: &[&str]) -> Result<()> {
    let mut args = vec!["--network", network];
    args.extend_from_slice(extra);
    args.push(IMAGE);
    args.extend_from_slice(WEB);
    run_container(h, name, &args)
}

/// TCP: fetches `/etc/hostname` from the httpd at `target`, which must be `expect`.
fn fetch(h: &Host, container: &str, target: &str, expect: &str) -> Result<()> {
    let url = format!("http://{target}/etc/hostname");
    let out = h
        .container_exec(container, &["timeout", "5", "wget", "-q", "-O-", &url])
        .with_context(|| format!("{container} on {} cannot fetch {url}", h.name()))?;
    ensure!(out.trim() == expect, "{url} from {container}: {out:?}, want {expect:?}");
    Ok(())
}

/// Runs `cmd` inside the overlay namespace of VNI `vni` on `h`.
fn in_overlay(h: &Host, vni: u32, cmd: &[&str]) -> Result<String> {
    let netns = format!("--net={NETNS_DIR}/ovl-{vni}");
    let mut argv = vec!["nsenter", netns.as_str()];
    argv.extend_from_slice(cmd);
    h.exec(&argv)
}

/// The VNIs of the overlay namespaces on `h`.
fn overlay_vnis(h: &Host) -> Result<Vec<u32>> {
    let out = h.sh(&format!("ls {NETNS_DIR} 2>/dev/null || true"))?;
    Ok(out.split_whitespace().filter_map(|n| n.strip_prefix("ovl-")?.parse().ok()).collect())
}

/// The VNI the store holds for a network key.
fn vni_in_store(c: &Cluster, network_key: &str) -> Result<u32> {
    let key = format!("/netloom/v1/overlay/networks/{network_key}");
    let out =
        c.underlay_exec(&["etcdctl", "--endpoints", &UnderlayEtcd::endpoint(c, 0), "get", "--print-value-only", &key])?;
    let value: serde_json::Value = serde_json::from_str(out.trim()).with_context(|| format!("{key}: {out:?}"))?;
    value["vni"].as_u64().map(|v| v as u32).with_context(|| format!("{key} has no vni: {value}"))
}

/// The VXLAN link's own FDB entries (MAC → remote VTEP), not what the bridge learned.
fn fdb(h: &Host, vni: u32) -> Result<String> {
    let out = in_overlay(h, vni, &["bridge", "fdb", "show", "dev", "vxlan0"])?;
    Ok(out.lines().filter(|l| l.contains(" dst ")).collect::<Vec<_>>().join("\n"))
}

fn neigh(h: &Host, vni: u32) -> Result<String> {
    in_overlay(h, vni, &["ip", "neigh", "show", "dev", "vxlan0"])
}

fn eventually(what: &str, mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    wait_until(Duration::from_secs(10), Duration::from_millis(50), what, &mut check)
}

fn docker_net_id(h: &Host, network: &str) -> Result<String> {
    Ok(h.docker(&["network", "inspect", "--format", "{{.Id}}", network])?.trim().to_string())
}

/// Nothing of loom-overlay is left on `h`: no namespace, no veth in the host namespace.
fn assert_clean_host(h: &Host) -> Result<()> {
    ensure!(overlay_vnis(h)?.is_empty(), "overlay namespaces left on {}: {:?}", h.name(), overlay_vnis(h)?);
    let links = h.exec(&["ip", "-o", "link"])?;
    ensure!(!links.contains(": lov"), "veths left on {}: {links}", h.name());
    Ok(())
}

fn step(t0: Instant, what: &str) {
    eprintln!("[overlay] {:6.2}s {what}", t0.elapsed().as_secs_f64());
}

// ---- Docker 20.10, global scope ---------------------------------------------------------------

fn global_scenario(c: &Cluster) -> Result<()> {
    let t0 = Instant::now();
    let etcd = UnderlayEtcd::start(c, 1)?;
    let store = etcd.url(c);
    step(t0, "etcd up");
    let args = [format!("--cluster-store={store}"), "--cluster-advertise=eth0:2376".to_string()];
    let hosts = c.add_hosts(vec![
        HostConfig::new("h1", DockerVersion::V20).dockerd_args(&args),
        HostConfig::new("h2", DockerVersion::V20).dockerd_args(&args),
        HostConfig::new("h3", DockerVersion::V20).dockerd_args(&args),
    ])?;
    let (h1, h2, h3) = (&hosts[0], &hosts[1], &hosts[2]);
    let plugin_args = ["--scope", "global", "--store", store.as_str(), "--advertise-addr", "eth0", "--log-level", LOG];
    for h in &hosts {
        h.start_plugin("loom-overlay", &plugin_args)?;
    }
    step(t0, "hosts up");

    h1.docker(&["network", "create", "-d", "loom-overlay", "--subnet", "10.91.0.0/24", "ov1"])?;
    h1.docker(&["network", "create", "-d", "loom-overlay", "--subnet", "10.92.0.0/24", "ov2"])?;
    for h in [h2, h3] {
        let scope = h.docker(&["network", "inspect", "--format", "{{.Scope}}", "ov1"])?;
        ensure!(scope.trim() == "global", "ov1 on {} has scope {scope:?}", h.name());
    }
    let ov1 = docker_net_id(h1, "ov1")?;
    let vni1 = vni_in_store(c, &ov1)?;
    ensure!((4096..=16_777_215).contains(&vni1), "allocated VNI {vni1}");
    step(t0, "networks created");

    web(h1, "a1", "ov1", &["-p", "8080:80"])?;
    web(h2, "b1", "ov1", &[])?;
    web(h3, "c1", "ov1", &[])?;
    web(h1, "a2", "ov2", &[])?;
    web(h2, "b2", "ov2", &[])?;
    let (a1, b1, c1) = (h1.container_ip("a1", "ov1")?, h2.container_ip("b1", "ov1")?, h3.container_ip("c1", "ov1")?);
    let (a2, b2) = (h1.container_ip("a2", "ov2")?, h2.container_ip("b2", "ov2")?);
    step(t0, "containers up");

    // Across hosts, both ways, ICMP and TCP.
    ping(h1, "a1", &b1)?;
    ping(h2, "b1", &a1)?;
    ping(h3, "c1", &a1)?;
    ping(h1, "a1", &c1)?;
    fetch(h1, "a1", &b1, "b1")?;
    fetch(h2, "b1", &a1, "a1")?;
    fetch(h3, "c1", &b1, "b1")?;
    ping(h2, "b2", &a2)?;
    fetch(h1, "a2", &b2, "b2")?;
    fetch(h2, "b1", "a1", "a1").context("by name, through Docker's DNS")?;
    fetch(h1, "a1", "b1", "b1").context("by name, the other way")?;
    let url = format!("http://{}:8080/etc/hostname", h1.underlay_ip());
    let got =
        h2.exec(&["timeout", "5", "busybox", "wget", "-q", "-O-", &url]).context("a1's published port from h2")?;
    ensure!(got.trim() == "a1", "{url}: {got:?}");
    step(t0, "cross-host traffic");

    // Two overlays are isolated from each other, on one host and across hosts.
    no_ping(h1, "a2", &a1)?;
    no_ping(h1, "a2", &b1)?;
    no_ping(h2, "b1", &b2)?;
    // Egress through docker_gwbridge to the underlay.
    ping(h1, "a1", &Cluster::gateway().to_string())?;
    ping(h3, "c1", &Cluster::gateway().to_string())?;
    // MTU: 1500 underlay less 50.
    let mtu = h2.container_exec("b1", &["cat", "/sys/class/net/eth0/mtu"])?;
    ensure!(mtu.trim() == "1450", "b1's eth0 MTU is {mtu}");
    step(t0, "isolation, egress, MTU");

    // A removed endpoint's entries go on every other host.
    let c1_mac = h3.container_network_field("c1", "ov1", "MacAddress")?;
    ensure!(fdb(h1, vni1)?.contains(&c1_mac), "h1 has no FDB entry for c1: {}", fdb(h1, vni1)?);
    h3.docker(&["rm", "-f", "c1"])?;
    for h in [h1, h2] {
        eventually(&format!("c1's entries to go on {}", h.name()), || {
            Ok(!fdb(h, vni1)?.contains(&c1_mac) && !neigh(h, vni1)?.contains(&format!("{c1} ")))
        })?;
    }
    step(t0, "removed endpoint withdrawn");

    // Its address reused at once by a container on another host: the MAC (Docker 20.10's
    // 02:42:<address> scheme) now lives behind another VTEP. (The Docker CLI can't give a
    // 20.10 daemon a MAC per network; a new MAC for a reused address is in the Docker 26 scenario.)
    web(h2, "c2", "ov1", &["--ip", &c1])?;
    ping(h1, "a1", &c1).context("the reused address on its new host")?;
    fetch(h1, "a1", &c1, "c2")?;
    let entries = fdb(h1, vni1)?;
    ensure!(entries.contains(&format!("{c1_mac} dst {}", h2.underlay_ip())), "h1's FDB: {entries}");
    step(t0, "address reused on another host");

    // A driver crash keeps the dataplane; the restarted driver takes new containers.
    let plugin = h2.plugins()[0].clone();
    let before = in_overlay(h2, vni1, &["ip", "-o", "link", "show", "vxlan0"])?;
    plugin.sigkill()?;
    ping(h1, "a1", &b1)?;
    fetch(h2, "b1", &a1, "a1")?;
    plugin.start()?;
    ping(h1, "a1", &b1)?;
    let after = in_overlay(h2, vni1, &["ip", "-o", "link", "show", "vxlan0"])?;
    ensure!(before.split(':').next() == after.split(':').next(), "the VXLAN link was recreated: {before} / {after}");
    web(h2, "b3", "ov1", &[])?;
    let b3 = h2.container_ip("b3", "ov1")?;
    ping(h1, "a1", &b3)?;
    ping(h2, "b3", &a1)?;
    step(t0, "driver restart");

    // Removal leaves nothing behind: no namespace, VXLAN link, bridge, veth or store key.
    h1.docker(&["rm", "-f", "a1", "a2"])?;
    h2.docker(&["rm", "-f", "b1", "b2", "b3", "c2"])?;
    h1.docker(&["network", "rm", "ov1"])?;
    // On a host that never had a container on it: Docker tells only that host.
    h3.docker(&["network", "rm", "ov2"])?;
    for h in &hosts {
        eventually(&format!("{} to be clean", h.name()), || Ok(assert_clean_host(h).is_ok()))?;
    }
    let keys: Vec<String> = etcd.keys(c, 0, "/netloom/v1/")?.into_iter().filter(|k| !k.contains("/hosts/")).collect();
    ensure!(keys.is_empty(), "store keys left: {keys:#?}");
    for h in &hosts {
        let plugin = &h.plugins()[0];
        ensure!(plugin.is_running(), "loom-overlay on {} exited: {:?}", h.name(), plugin.exit_status());
    }
    step(t0, "removed");
    Ok(())
}

#[test]
fn overlay_global_docker20() {
    scenario("ovglobal", global_scenario);
}

// ---- Docker 26, local scope, 3-node etcd ----------------------------------------------------

/// loom-ipam and loom-overlay (local scope) on `h`, both on `store`.
fn start_local_plugins(h: &Host, store: &str, extra: &[&str]) -> Result<()> {
    LocalOverlay::new(store).log_level(LOG).overlay_args(extra).start(h)?;
    Ok(())
}

/// `docker network create` of the same overlay on every host at the same moment.
fn create_everywhere(hosts: &[&Host], args: &[&str]) -> Result<()> {
    let results: Vec<Result<String>> = std::thread::scope(|s| {
        let handles: Vec<_> = hosts
            .iter()
            .map(|h| {
                let mut argv = vec!["network", "create", "-d", "loom-overlay", "--ipam-driver", "loom-ipam"];
                argv.extend_from_slice(args);
                s.spawn(move || h.docker(&argv))
            })
            .collect();
        handles.into_iter().map(|t| t.join().unwrap_or_else(|_| Err(anyhow::anyhow!("panicked")))).collect()
    });
    for (h, r) in hosts.iter().zip(results) {
        r.with_context(|| format!("network create {args:?} on {}", h.name()))?;
    }
    Ok(())
}

fn local_scenario(c: &Cluster) -> Result<()> {
    let t0 = Instant::now();
    let mut etcd = UnderlayEtcd::start(c, 3)?;
    let store = etcd.url(c);
    step(t0, "3-node etcd up");
    let hosts =
        c.add_hosts(vec![HostConfig::new("h1", DockerVersion::V26), HostConfig::new("h2", DockerVersion::V26)])?;
    let (h1, h2) = (&hosts[0], &hosts[1]);
    // h1 forgets a host gone for more than a second, and checks every second.
    // A host whose lease expired is gone at once here (no grace while its tunnel endpoint answers).
    let quick = ["--lease-ttl", "3", "--dead-host-grace", "1", "--reconcile-interval", "1", "--peer-grace", "0"];
    start_local_plugins(h1, &store, &quick)?;
    start_local_plugins(h2, &store, &["--lease-ttl", "3"])?;
    step(t0, "hosts up");

    // The same `docker network create` on each host; one with a VNI, one keyed by its subnet
    // (created on both hosts at the same moment: one VNI).
    for h in [h1, h2] {
        let vni = "com.docker.network.driver.overlay.vxlanid_list=5000";
        h.network_create(
            "loom-overlay",
            "lo1",
            &["--ipam-driver", "loom-ipam", "--subnet", "10.93.0.0/24", "-o", vni],
        )?;
    }
    create_everywhere(&[h1, h2], &["--subnet", "10.94.0.0/24", "-o", "com.docker.network.driver.mtu=1400", "lo2"])?;
    let lo2_vnis: Vec<u32> = overlay_vnis(h1)?.into_iter().filter(|v| *v != 5000).collect();
    ensure!(lo2_vnis.len() == 1, "overlay namespaces on h1: {:?}", overlay_vnis(h1)?);
    let vni2 = vni_in_store(c, &format!("vni-{}", lo2_vnis[0]))?;
    for h in [h1, h2] {
        let mut want = vec![5000, vni2];
        want.sort();
        let mut vnis = overlay_vnis(h)?;
        vnis.sort();
        ensure!(vnis == want, "overlay namespaces on {}: {vnis:?}, want {want:?}", h.name());
    }
    let keys = etcd.keys(c, 1, "/netloom/v1/overlay/networks/")?;
    ensure!(keys.len() == 2, "network records: {keys:?}");
    step(t0, "networks created");

    web(h1, "x1", "lo1", &[])?;
    web(h2, "y1", "lo1", &[])?;
    web(h1, "x2", "lo2", &[])?;
    web(h2, "y2", "lo2", &[])?;
    let (x1, y1) = (h1.container_ip("x1", "lo1")?, h2.container_ip("y1", "lo1")?);
    let (x2, y2) = (h1.container_ip("x2", "lo2")?, h2.container_ip("y2", "lo2")?);
    ensure!(x1 != y1 && x2 != y2, "loom-ipam handed out one address twice: {x1} {y1} {x2} {y2}");
    step(t0, "containers up");

    ping(h1, "x1", &y1)?;
    ping(h2, "y1", &x1)?;
    fetch(h1, "x1", &y1, "y1")?;
    fetch(h2, "y1", &x1, "x1")?;
    ping(h1, "x2", &y2)?;
    fetch(h2, "y2", &x2, "x2")?;
    no_ping(h1, "x2", &y1)?;
    no_ping(h2, "y1", &x2)?;
    ping(h2, "y2", &Cluster::gateway().to_string())?;
    let mtu = h1.container_exec("x1", &["cat", "/sys/class/net/eth0/mtu"])?;
    ensure!(mtu.trim() == "1450", "x1's eth0 MTU is {mtu}");
    let mtu = h2.container_exec("y2", &["cat", "/sys/class/net/eth0/mtu"])?;
    ensure!(mtu.trim() == "1400", "y2's eth0 MTU is {mtu}, on a network made with mtu=1400");
    step(t0, "cross-host traffic, isolation, egress, MTU");

    // An address reused at once by a new container with a new MAC.
    h2.docker(&["rm", "-f", "y1"])?;
    web(h2, "y1new", "lo1", &["--ip", &y1, "--mac-address", "02:42:aa:bb:cc:02"])?;
    ping(h1, "x1", &y1).context("the reused address with its new MAC")?;
    fetch(h1, "x1", &y1, "y1new")?;
    let entries = neigh(h1, 5000)?;
    ensure!(entries.contains(&format!("{y1} lladdr 02:42:aa:bb:cc:02")), "h1's neighbours: {entries}");
    step(t0, "address reused with a new MAC");

    // One etcd member down: everything goes on through the other two.
    etcd.stop(0)?;
    etcd.wait_leader(c)?;
    web(h1, "x3", "lo1", &[])?;
    let x3 = h1.container_ip("x3", "lo1")?;
    ping(h2, "y1new", &x3)?;
    fetch(h1, "x3", &y1, "y1new")?;
    etcd.restart(c, 0)?;
    step(t0, "an etcd member lost and back");

    // A host whose driver stops renewing its lease is gone for the others: its entries go.
    let plugin = h2.plugins().into_iter().find(|p| p.name() == "loom-overlay").context("no loom-overlay on h2")?;
    let y1_mac = "02:42:aa:bb:cc:02";
    plugin.sigkill()?;
    wait_until(Duration::from_secs(15), Duration::from_millis(100), "h2's entries to go from h1", || {
        Ok(!fdb(h1, 5000)?.contains(y1_mac))
    })?;
    no_ping(h1, "x3", &y1)?;
    step(t0, "a dead host's entries removed");
    // After the grace, its records go from the store, and its network memberships.
    let members = |c: &Cluster| -> Result<Vec<String>> {
        let out = c.underlay_exec(&[
            "etcdctl",
            "--endpoints",
            &UnderlayEtcd::endpoint(c, 1),
            "get",
            "--print-value-only",
            "/netloom/v1/overlay/networks/vni-5000",
        ])?;
        let value: serde_json::Value = serde_json::from_str(out.trim())?;
        Ok(value["members"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default())
    };
    wait_until(Duration::from_secs(15), Duration::from_millis(100), "h2's records to go", || {
        Ok(etcd.keys(c, 1, "/netloom/v1/overlay/peers/vni-5000/")?.len() == 2 && members(c)?.len() == 1)
    })?;
    step(t0, "a dead host's records deleted");
    plugin.start()?;
    eventually("h2's entries to come back on h1", || Ok(fdb(h1, 5000)?.contains(y1_mac)))?;
    ping(h1, "x3", &y1)?;
    eventually("h2 back in the network's members", || Ok(members(c)?.len() == 2))?;
    step(t0, "the host back");

    h1.docker(&["rm", "-f", "x1", "x2", "x3"])?;
    h2.docker(&["rm", "-f", "y1new", "y2"])?;
    for h in [h1, h2] {
        h.docker(&["network", "rm", "lo1", "lo2"])?;
        assert_clean_host(h)?;
    }
    let keys: Vec<String> = etcd
        .keys(c, 1, "/netloom/v1/")?
        .into_iter()
        .filter(|k| k.contains("/overlay/") && !k.contains("/hosts/") || k.contains("/vnis/"))
        .collect();
    ensure!(keys.is_empty(), "store keys left: {keys:#?}");
    step(t0, "removed");
    Ok(())
}

#[test]
fn overlay_local_docker26() {
    scenario("ovlocal", local_scenario);
}

// ---- etcd outage ------------------------------------------------------------------------------

fn outage_scenario(c: &Cluster) -> Result<()> {
    let t0 = Instant::now();
    let mut etcd = UnderlayEtcd::start(c, 1)?;
    let store = etcd.url(c);
    let hosts =
        c.add_hosts(vec![HostConfig::new("h1", DockerVersion::V26), HostConfig::new("h2", DockerVersion::V26)])?;
    let (h1, h2) = (&hosts[0], &hosts[1]);
    for h in &hosts {
        start_local_plugins(h, &store, &["--reconcile-interval", "2"])?;
    }
    create_everywhere(
        &[h1, h2],
        &["--subnet", "10.95.0.0/24", "-o", "com.docker.network.driver.overlay.vxlanid_list=5100", "out"],
    )?;
    web(h1, "x1", "out", &[])?;
    web(h2, "y1", "out", &[])?;
    web(h2, "y0", "out", &[])?;
    let (x1, y1, y0) = (h1.container_ip("x1", "out")?, h2.container_ip("y1", "out")?, h2.container_ip("y0", "out")?);
    ping(h1, "x1", &y1)?;
    ping(h1, "x1", &y0)?;
    step(t0, "up");

    // etcd goes away: traffic goes on, and so does a driver restart.
    etcd.stop(0)?;
    let plugin = h2.plugins().into_iter().find(|p| p.name() == "loom-overlay").context("no loom-overlay on h2")?;
    for _ in 0..3 {
        ping(h1, "x1", &y1)?;
        fetch(h2, "y1", &x1, "x1")?;
        std::thread::sleep(Duration::from_millis(500));
    }
    plugin.sigkill()?;
    plugin.start()?;
    // A change made meanwhile waits for the store: y0 goes (Docker lets it, loom-ipam can't
    // release its address until etcd is back).
    let removed = h2.docker(&["rm", "-f", "y0"]);
    for _ in 0..3 {
        ping(h1, "x1", &y1)?;
        ping(h2, "y1", &x1)?;
        std::thread::sleep(Duration::from_millis(500));
    }
    ensure!(
        fdb(h2, 5100)?.contains(&h1.container_network_field("x1", "out", "MacAddress")?),
        "h2 lost x1's entry: {}",
        fdb(h2, 5100)?
    );
    step(t0, "etcd down: traffic kept across a driver restart");

    etcd.restart(c, 0)?;
    step(t0, "etcd back");
    web(h2, "y2", "out", &[])?;
    let y2 = h2.container_ip("y2", "out")?;
    ping(h1, "x1", &y2)?;
    ping(h2, "y2", &x1)?;
    fetch(h1, "x1", &y2, "y2")?;
    web(h1, "x2", "out", &[])?;
    ping(h2, "y1", &h1.container_ip("x2", "out")?)?;
    match removed {
        Ok(_) => eventually("y0's entries to go from h1 once etcd is back", || {
            Ok(!neigh(h1, 5100)?.contains(&format!("{y0} ")))
        })?,
        Err(e) => eprintln!("[overlay] docker rm during the outage failed: {e:#}"),
    }
    step(t0, "new endpoints after the outage");

    // The reconciler repairs what a missed event (or a person) did to the kernel's tables.
    in_overlay(
        h1,
        5100,
        &["bridge", "fdb", "add", "02:42:de:ad:be:ef", "dev", "vxlan0", "dst", "10.250.0.99", "self", "permanent"],
    )?;
    in_overlay(
        h1,
        5100,
        &["ip", "neigh", "add", "10.95.0.99", "lladdr", "02:42:de:ad:be:ef", "dev", "vxlan0", "nud", "permanent"],
    )?;
    in_overlay(h1, 5100, &["ip", "neigh", "del", &y2, "dev", "vxlan0"])?;
    eventually("the reconciler to repair h1's tables", || {
        Ok(!fdb(h1, 5100)?.contains("de:ad:be:ef")
            && !neigh(h1, 5100)?.contains("10.95.0.99")
            && neigh(h1, 5100)?.contains(&format!("{y2} ")))
    })?;
    step(t0, "stale entries removed, missing ones restored by the reconciler");
    in_overlay(h1, 5100, &["ip", "link", "del", "vxlan0"])?;
    eventually("the reconciler to bring vxlan0 back", || Ok(fdb(h1, 5100).is_ok_and(|f| f.contains(" dst "))))?;
    ping(h1, "x1", &y2)?;
    step(t0, "a deleted VXLAN link made again");

    let _ = h2.docker(&["rm", "-f", "y0"]);
    h1.docker(&["rm", "-f", "x1", "x2"])?;
    h2.docker(&["rm", "-f", "y1", "y2"])?;
    for h in [h1, h2] {
        h.docker(&["network", "rm", "out"])?;
        assert_clean_host(h)?;
    }
    Ok(())
}

#[test]
fn overlay_etcd_outage() {
    scenario("ovoutage", outage_scenario);
}

// ---- bad input ----------------------------------------------------------------------------------

/// `docker network create` that must fail with a message containing `want`.
fn refused(h: &Host, driver: &str, args: &[&str], want: &str) -> Result<()> {
    let mut argv = vec!["network", "create", "-d", driver];
    argv.extend_from_slice(args);
    argv.push("refused");
    let err = match h.docker(&argv) {
        Ok(_) => bail!("`docker {}` was accepted", argv.join(" ")),
        Err(e) => format!("{e:#}"),
    };
    ensure!(err.contains(want), "`docker {}`: the error does not say {want:?}:\n{err}", argv.join(" "));
    let said = err.lines().find(|l| l.starts_with("stderr:")).unwrap_or_default();
    eprintln!("[overlay] refused as expected: {said}");
    let networks = h.docker(&["network", "ls", "--format", "{{.Name}}"])?;
    ensure!(!networks.lines().any(|n| n == "refused"), "docker kept the refused network");
    Ok(())
}

fn bad_input_scenario(c: &Cluster) -> Result<()> {
    let t0 = Instant::now();
    let etcd = UnderlayEtcd::start(c, 1)?;
    let store = etcd.url(c);
    let hosts =
        c.add_hosts(vec![HostConfig::new("hb", DockerVersion::V26), HostConfig::new("hg", DockerVersion::V26)])?;
    let (hb, hg) = (&hosts[0], &hosts[1]);

    // Misconfigured drivers start (so that Docker hears why) and refuse every network.
    let dead = format!("etcd://{}:12999", c.underlay_ip());
    for (name, args, want) in [
        ("ovnostore", vec!["--advertise-addr", "eth0"], "needs a store shared by every host"),
        ("ovdead", vec!["--store", dead.as_str(), "--advertise-addr", "eth0"], "is unavailable"),
        (
            "ovbadip",
            vec!["--store", store.as_str(), "--advertise-addr", "10.1.2.3"],
            "--advertise-addr 10.1.2.3 is not an address of this host",
        ),
        (
            "ovbadif",
            vec!["--store", store.as_str(), "--advertise-addr", "eth9"],
            "neither an IP address nor an interface",
        ),
    ] {
        let netns_dir = format!("/run/{name}");
        let mut all = args.clone();
        all.extend_from_slice(&["--netns-dir", &netns_dir]);
        hb.start_plugin_as("loom-overlay", name, &all)?;
        refused(hb, name, &["--subnet", "10.96.0.0/24"], want)?;
    }
    step(t0, "misconfigured drivers refuse");

    // Bad options on a working driver.
    start_local_plugins(hg, &store, &[])?;
    let vni = "com.docker.network.driver.overlay.vxlanid_list";
    for (args, want) in [
        (
            vec!["--ipam-driver", "loom-ipam", "--subnet", "10.97.0.0/24", "-o", &format!("{vni}=16777216")],
            "VNI 16777216 is out of range: VXLAN ids are 1-16777215",
        ),
        (
            vec!["--ipam-driver", "loom-ipam", "--subnet", "10.97.0.0/24", "-o", &format!("{vni}=0")],
            "VNI 0 is out of range",
        ),
        (vec!["--ipam-driver", "loom-ipam", "--subnet", "10.97.0.0/24", "-o", &format!("{vni}=x")], "not a number"),
        (
            vec!["--ipam-driver", "loom-ipam", "--subnet", "10.97.0.0/24", "-o", "com.docker.network.driver.mtu=60"],
            "too small for the overlay",
        ),
        (
            vec!["--ipam-driver", "loom-ipam", "--subnet", "10.97.0.0/24", "-o", "com.docker.network.driver.mtu=1500"],
            "too large for the overlay",
        ),
        (
            vec!["--ipam-driver", "loom-ipam", "--subnet", "10.97.0.0/24", "-o", "colour=blue"],
            "unknown option(s) colour",
        ),
    ] {
        refused(hg, "loom-overlay", &args, want)?;
    }
    // A VNI, or a subnet, another network already has.
    hg.network_create(
        "loom-overlay",
        "first",
        &["--ipam-driver", "loom-ipam", "--subnet", "10.97.0.0/24", "-o", &format!("{vni}=6000")],
    )?;
    refused(
        hg,
        "loom-overlay",
        &["--ipam-driver", "loom-ipam", "--subnet", "10.98.0.0/24", "-o", &format!("{vni}=6000")],
        "VNI 6000 is already used by the overlay with subnet 10.97.0.0/24",
    )?;
    refused(
        hg,
        "loom-overlay",
        &["--ipam-driver", "loom-ipam", "--subnet", "10.97.0.0/24", "-o", &format!("{vni}=6001")],
        "subnet 10.97.0.0/24 is already the overlay vni-6000",
    )?;
    refused(
        hg,
        "loom-overlay",
        &["--ipam-driver", "loom-ipam", "--subnet", "10.97.0.0/24"],
        "this host already has Docker network",
    )?;
    step(t0, "bad options refused");

    // Nothing of the refused networks is left: one namespace, one network record, one VNI.
    ensure!(overlay_vnis(hg)? == vec![6000], "overlay namespaces: {:?}", overlay_vnis(hg)?);
    let links = hb.exec(&["ip", "-o", "link"])?;
    ensure!(!links.contains("lov"), "links left on {}: {links}", hb.name());
    let networks = etcd.keys(c, 0, "/netloom/v1/overlay/networks/")?;
    ensure!(networks == vec!["/netloom/v1/overlay/networks/vni-6000".to_string()], "network records: {networks:?}");
    let vnis = etcd.keys(c, 0, "/netloom/v1/ipam/vnis/ids/")?;
    ensure!(vnis == vec!["/netloom/v1/ipam/vnis/ids/6000".to_string()], "VNIs taken: {vnis:?}");
    hg.docker(&["network", "rm", "first"])?;
    assert_clean_host(hg)?;
    ensure!(etcd.keys(c, 0, "/netloom/v1/ipam/vnis/")?.is_empty(), "VNI keys left");
    for p in hb.plugins().iter().chain(hg.plugins().iter()) {
        ensure!(p.is_running(), "{} exited: {:?}", p.name(), p.exit_status());
    }
    step(t0, "nothing left behind");
    Ok(())
}

#[test]
fn overlay_bad_input() {
    scenario("ovbad", bad_input_scenario);
}

// ---- egress and published ports when dockerd leaves iptables alone ------------------------------

/// The container's address on docker_gwbridge (its second interface).
fn gwbridge_ip(h: &Host, container: &str) -> Result<String> {
    let out = h.container_exec(container, &["ip", "-4", "-o", "addr", "show", "eth1"])?;
    let cidr = out
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .with_context(|| format!("{container} eth1: {out}"))?;
    Ok(cidr.split('/').next().unwrap_or_default().to_string())
}

fn gateway_scenario(c: &Cluster) -> Result<()> {
    let t0 = Instant::now();
    let etcd = UnderlayEtcd::start(c, 1)?;
    let store = etcd.url(c);
    let args = ["--iptables=false", "--userland-proxy=false"];
    let hosts = c.add_hosts(vec![
        HostConfig::new("h1", DockerVersion::V26).dockerd_args(&args),
        HostConfig::new("h2", DockerVersion::V26).dockerd_args(&args),
    ])?;
    let (h1, h2) = (&hosts[0], &hosts[1]);
    // Both firewall backends: nftables where the port is published, iptables on the other host.
    start_local_plugins(h1, &store, &["--firewall", "nftables"])?;
    start_local_plugins(h2, &store, &["--firewall", "iptables"])?;
    create_everywhere(&[h1, h2], &["--subnet", "10.99.1.0/24", "gw1"])?;
    create_everywhere(&[h1, h2], &["--subnet", "10.99.2.0/24", "gw2"])?;
    web(h1, "w1", "gw1", &["-p", "8080:80"])?;
    web(h2, "v1", "gw1", &[])?;
    web(h1, "u1", "gw2", &[])?;
    step(t0, "up");

    let outside = Cluster::gateway().to_string();
    ping(h1, "w1", &outside).context("egress from h1")?;
    ping(h2, "v1", &outside).context("egress from h2")?;
    step(t0, "egress");

    let url = format!("http://{}:8080/etc/hostname", h1.underlay_ip());
    let got = h2.exec(&["timeout", "5", "busybox", "wget", "-q", "-O-", &url]).context("published port from h2")?;
    ensure!(got.trim() == "w1", "{url} from h2: {got:?}");
    let got = c
        .underlay_exec(&["timeout", "5", "busybox", "wget", "-q", "-O-", &url])
        .context("published port from the underlay")?;
    ensure!(got.trim() == "w1", "{url} from the underlay: {got:?}");
    step(t0, "published port");

    // docker_gwbridge joins containers of every overlay on the host: its ports are kept apart.
    no_ping(h1, "u1", &gwbridge_ip(h1, "w1")?)?;
    fetch(h2, "v1", &h1.container_ip("w1", "gw1")?, "w1")?;
    step(t0, "docker_gwbridge ports isolated");

    h1.docker(&["rm", "-f", "w1", "u1"])?;
    h2.docker(&["rm", "-f", "v1"])?;
    let rules = h1.exec(&["nft", "list", "table", "inet", "netloom"])?;
    ensure!(!rules.contains(":80") && !rules.contains("8080"), "published-port rules left:\n{rules}");
    for h in [h1, h2] {
        h.docker(&["network", "rm", "gw1", "gw2"])?;
        assert_clean_host(h)?;
    }
    step(t0, "removed");
    Ok(())
}

#[test]
fn overlay_gateway_without_docker_iptables() {
    scenario("ovgw", gateway_scenario);
}

// ---- two hosts creating the same network at the same moment ---------------------------------

/// Socket-level, no dockerd: both hosts' drivers get CreateNetwork for the same overlay at the
/// same moment, many times over; every time they end with one network record and one VNI, and
/// removing it on both leaves no key.
fn race_scenario(c: &Cluster) -> Result<()> {
    let t0 = Instant::now();
    let etcd = UnderlayEtcd::start(c, 1)?;
    let store = etcd.url(c);
    let hosts = c.add_hosts(vec![
        HostConfig::new("r1", DockerVersion::V26).defer_docker(),
        HostConfig::new("r2", DockerVersion::V26).defer_docker(),
    ])?;
    let mut sockets = Vec::new();
    for h in &hosts {
        let vtep = h.underlay_ip().to_string();
        let plugin =
            h.start_plugin("loom-overlay", &["--store", &store, "--advertise-addr", &vtep, "--log-level", LOG])?;
        sockets.push(h.path_inside(&plugin.socket()));
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut clients = Vec::new();
        for socket in &sockets {
            clients.push(netloom_plugin_api::client::PluginClient::connect(socket).await?);
        }
        for round in 0..12u32 {
            let subnet = format!("10.60.{round}.0/24");
            let mut options = serde_json::json!({});
            if round % 2 == 0 {
                options = serde_json::json!({"com.docker.network.driver.overlay.vxlanid_list": (7000 + round).to_string()});
            }
            let requests: Vec<serde_json::Value> = (0..2)
                .map(|i| {
                    serde_json::json!({
                        "NetworkID": format!("{:064x}", (round as u128) << 8 | i as u128),
                        "Options": {"com.docker.network.generic": options, "com.docker.network.enable_ipv6": false},
                        "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": subnet, "Gateway": format!("10.60.{round}.1/24")}],
                        "IPv6Data": [],
                    })
                })
                .collect();
            let (a, b) = clients.split_at_mut(1);
            let (ra, rb) = tokio::join!(
                a[0].call("NetworkDriver.CreateNetwork", &requests[0]),
                b[0].call("NetworkDriver.CreateNetwork", &requests[1])
            );
            ra.with_context(|| format!("round {round}, r1"))?;
            rb.with_context(|| format!("round {round}, r2"))?;
            let records = etcd.keys(c, 0, "/netloom/v1/overlay/networks/")?;
            ensure!(records.len() == 1, "round {round}: network records {records:?}");
            let vnis = etcd.keys(c, 0, "/netloom/v1/ipam/vnis/ids/")?;
            ensure!(vnis.len() == 1, "round {round}: VNIs taken {vnis:?}");
            let key = records[0].rsplit('/').next().unwrap_or_default().to_string();
            let vni = vni_in_store(c, &key)?;
            for h in &hosts {
                ensure!(overlay_vnis(h)? == vec![vni], "round {round}: namespaces on {}: {:?}", h.name(), overlay_vnis(h)?);
            }
            for (client, request) in clients.iter_mut().zip(&requests) {
                client.call("NetworkDriver.DeleteNetwork", &serde_json::json!({"NetworkID": request["NetworkID"]})).await?;
            }
            let left: Vec<String> = etcd
                .keys(c, 0, "/netloom/v1/")?
                .into_iter()
                .filter(|k| !k.contains("/hosts/"))
                .collect();
            ensure!(left.is_empty(), "round {round}: keys left {left:?}");
        }
        Ok::<(), anyhow::Error>(())
    })?;
    for h in &hosts {
        assert_clean_host(h)?;
    }
    step(t0, "12 simultaneous creations, one VNI each time");
    Ok(())
}

#[test]
fn overlay_simultaneous_create() {
    scenario("ovrace", race_scenario);
}
