//! loom-overlay: a driver that is down is not a host that is gone. Two hosts, loom-ipam and
//! loom-overlay (local scope) over an etcd in the underlay, Docker 20.10 and 26:
//! - host B's loom-overlay SIGKILLed for longer than its lease and than A's `--peer-grace`: a
//!   ping from A's container to B's goes on throughout, across B's restart too; afterwards old and
//!   new containers reach each other both ways;
//! - B's tunnel endpoint really gone (its driver killed and its underlay link down): A removes
//!   B's entries once the grace has passed without an answer, not before, and takes them back
//!   when B returns.
//!
//! And a driver that never heard: Docker 20.10 with a cluster store forgets a global-scope network
//! (its DeleteNetwork swallowed on the way to the driver); reconciliation removes it from both
//! hosts and the store within one reconcile period, while a network Docker still has keeps working.
//!
//! Needs `cargo build --release --workspace --bins`.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use netloom_tests::{
    ping, scenario_tests, wait_until, Cluster, DockerVersion, Host, HostConfig, LocalOverlay, UnderlayEtcd,
    FAST_RECONCILE, IMAGE,
};

const VNI: u32 = 5400;
/// B's lease: its host record leaves the store this long after its driver dies.
const LEASE_TTL: &str = "3";
/// A's grace for an absent host whose tunnel endpoint does not answer.
const PEER_GRACE: Duration = Duration::from_secs(6);
/// One echo every 200 ms, for this long: spans the kill, the absence and the restart.
const PING_SECS: u64 = 32;
/// Echo requests allowed to go unanswered over the whole run.
const LOSS_ALLOWED: u32 = 3;

fn step(t0: Instant, what: &str) {
    eprintln!("[overlay-down] {:6.2}s {what}", t0.elapsed().as_secs_f64());
}

fn start_plugins(h: &Host, store: &str) -> Result<()> {
    let grace = PEER_GRACE.as_secs().to_string();
    LocalOverlay::new(store).overlay_args(&["--lease-ttl", LEASE_TTL, "--peer-grace", &grace]).start(h)?;
    Ok(())
}

/// The VXLAN link's own FDB entries (MAC → remote VTEP) on `h`, not what the bridge learned.
fn fdb(h: &Host) -> Result<String> {
    let netns = format!("--net=/run/netloom/loom-overlay/netns/ovl-{VNI}");
    let out = h.exec(&["nsenter", &netns, "bridge", "fdb", "show", "dev", "vxlan0"])?;
    Ok(out.lines().filter(|l| l.contains(" dst ")).collect::<Vec<_>>().join("\n"))
}

/// Whether the store still has `h`'s lease record.
fn has_lease(c: &Cluster, etcd: &UnderlayEtcd, h: &Host) -> Result<bool> {
    let id = std::fs::read_to_string(
        h.plugins().iter().find(|p| p.name() == "loom-overlay").context("no loom-overlay")?.state_dir().join("host-id"),
    )?;
    Ok(etcd.keys(c, 0, "/netloom/v1/overlay/hosts/")?.iter().any(|k| k.ends_with(id.trim())))
}

fn sleep_container(h: &Host, name: &str) -> Result<String> {
    sleep_on(h, name, "ov")
}

fn sleep_on(h: &Host, name: &str, network: &str) -> Result<String> {
    h.docker(&["run", "-d", "--name", name, "--network", network, IMAGE, "sleep", "600"])?;
    h.container_ip(name, network)
}

/// (sent, answered) from busybox ping's summary.
fn ping_summary(out: &str) -> Option<(u32, u32)> {
    let line = out.lines().find(|l| l.contains("packets transmitted"))?;
    let mut numbers = line.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).map(|s| s.parse().ok());
    Some((numbers.next()??, numbers.next()??))
}

fn down_scenario(c: &Cluster, docker: DockerVersion) -> Result<()> {
    let t0 = Instant::now();
    let etcd = UnderlayEtcd::start(c, 1)?;
    let store = etcd.url(c);
    let hosts = c.add_hosts(vec![HostConfig::new("ha", docker), HostConfig::new("hb", docker)])?;
    let (a, b) = (&hosts[0], &hosts[1]);
    for h in [a, b] {
        start_plugins(h, &store)?;
        let vni = format!("com.docker.network.driver.overlay.vxlanid_list={VNI}");
        h.network_create(
            "loom-overlay",
            "ov",
            &["--ipam-driver", "loom-ipam", "--subnet", "10.96.0.0/24", "-o", &vni],
        )?;
    }
    let x = sleep_container(a, "ax")?;
    let y = sleep_container(b, "by")?;
    let y_mac = b.container_network_field("by", "ov", "MacAddress")?;
    // The path works, both ways, through the FDB entry A has for y.
    ping(a, "ax", &y)?;
    ping(b, "by", &x)?;
    ensure!(fdb(a)?.contains(&format!("{y_mac} dst {}", b.underlay_ip())), "A's FDB has no entry for y: {}", fdb(a)?);
    ensure!(has_lease(c, &etcd, b)?, "B has no lease record in the store");
    step(t0, "two hosts, x on A and y on B reach each other");

    let overlay_b = b.plugins().into_iter().find(|p| p.name() == "loom-overlay").context("no loom-overlay on B")?;
    let (sent, answered) = std::thread::scope(|s| -> Result<(u32, u32)> {
        let pinger = s.spawn(|| {
            let script = format!("ping -i 0.2 -w {PING_SECS} {y}; true");
            a.container_exec("ax", &["sh", "-c", &script])
        });
        std::thread::sleep(Duration::from_secs(2));
        let killed = Instant::now();
        overlay_b.sigkill()?;
        step(t0, "B's loom-overlay SIGKILLed");
        wait_until(Duration::from_secs(15), Duration::from_millis(200), "B's lease to expire", || {
            Ok(!has_lease(c, &etcd, b)?)
        })?;
        step(t0, &format!("B's lease expired {:.1}s after the kill", killed.elapsed().as_secs_f64()));
        // Longer than A's grace: B's tunnel endpoint answers, so A keeps its entries.
        std::thread::sleep(PEER_GRACE + Duration::from_secs(4));
        ensure!(fdb(a)?.contains(&y_mac), "A dropped y's entry while B's driver was down: {}", fdb(a)?);
        ensure!(!has_lease(c, &etcd, b)?, "B's lease came back without its driver");
        step(t0, "B absent for longer than the grace: A keeps y's entry");
        overlay_b.start()?;
        step(t0, "B's loom-overlay restarted");
        let output = pinger.join().map_err(|_| anyhow::anyhow!("the ping thread panicked"))??;
        ensure!(killed.elapsed() < Duration::from_secs(PING_SECS), "the ping ended before B's driver was back");
        ping_summary(&output).with_context(|| format!("no ping summary in {output:?}"))
    })?;
    step(t0, &format!("x -> y throughout: {answered} of {sent} echo requests answered"));
    ensure!(sent >= 100, "only {sent} echo requests sent in {PING_SECS} s");
    ensure!(sent - answered <= LOSS_ALLOWED, "{} of {sent} echo requests to y were lost", sent - answered);
    ensure!(has_lease(c, &etcd, b)?, "B's restarted driver did not take its lease back");

    // Old and new containers, both ways.
    let x2 = sleep_container(a, "ax2")?;
    let y2 = sleep_container(b, "by2")?;
    for (h, from, to) in
        [(a, "ax", &y), (b, "by", &x), (a, "ax2", &y2), (b, "by2", &x2), (a, "ax", &y2), (b, "by2", &x)]
    {
        ping(h, from, to)?;
    }
    step(t0, "after B's restart old and new containers reach each other");

    // B really gone: its driver dies and its underlay link goes down.
    overlay_b.sigkill()?;
    let iface = b.underlay_iface();
    b.exec(&["ip", "link", "set", iface, "down"])?;
    wait_until(Duration::from_secs(15), Duration::from_millis(200), "B's lease to expire", || {
        Ok(!has_lease(c, &etcd, b)?)
    })?;
    let absent = Instant::now();
    ensure!(fdb(a)?.contains(&y_mac), "A dropped y's entry as soon as B's lease expired: {}", fdb(a)?);
    step(t0, "B's driver killed and its link down; its lease expired");
    wait_until(PEER_GRACE + Duration::from_secs(10), Duration::from_millis(200), "A to drop B's entries", || {
        Ok(!fdb(a)?.contains(&y_mac))
    })?;
    let after = absent.elapsed();
    step(t0, &format!("A dropped B's entries {:.1}s after B's lease expired", after.as_secs_f64()));
    ensure!(
        after + Duration::from_millis(1500) >= PEER_GRACE,
        "A dropped B's entries {after:?} after its lease expired, before the grace of {PEER_GRACE:?}"
    );

    // B back: its entries return, and traffic with them.
    b.exec(&["ip", "link", "set", iface, "up"])?;
    b.exec(&["ip", "route", "replace", "default", "via", &Cluster::gateway().to_string()])?;
    overlay_b.start()?;
    wait_until(Duration::from_secs(15), Duration::from_millis(200), "B's entries back on A", || {
        Ok(fdb(a)?.contains(&y_mac))
    })?;
    ping(a, "ax", &y)?;
    ping(b, "by2", &x2)?;
    step(t0, "B back: its entries and traffic return");

    a.docker(&["rm", "-f", "ax", "ax2"])?;
    b.docker(&["rm", "-f", "by", "by2"])?;
    for h in [a, b] {
        h.docker(&["network", "rm", "ov"])?;
        let left = h.sh("ls /run/netloom/loom-overlay/netns 2>/dev/null || true")?;
        ensure!(left.trim().is_empty(), "overlay namespaces left on {}: {left}", h.name());
    }
    step(t0, "removed");
    Ok(())
}

/// The overlay namespaces on `h`.
fn namespaces(h: &Host) -> Result<String> {
    Ok(h.sh("ls /run/netloom/loom-overlay/netns 2>/dev/null || true")?.trim().to_string())
}

fn forgotten_global_scenario(c: &Cluster) -> Result<()> {
    let t0 = Instant::now();
    let etcd = UnderlayEtcd::start(c, 1)?;
    let store = etcd.url(c);
    let cluster_store = [format!("--cluster-store={store}"), "--cluster-advertise=eth0:2376".to_string()];
    let config = |name: &str| HostConfig::new(name, DockerVersion::V20).dockerd_args(&cluster_store);
    let hosts = c.add_hosts(vec![config("ga"), config("gb")])?;
    let (a, b) = (&hosts[0], &hosts[1]);
    let mut args = vec!["--scope", "global", "--store", &store, "--advertise-addr", "eth0", "--log-level", "debug"];
    args.extend(FAST_RECONCILE);
    let (plugin, proxy) = a.start_plugin_behind_proxy("loom-overlay", &args)?;
    b.start_plugin("loom-overlay", &args)?;
    a.docker(&["network", "create", "-d", "loom-overlay", "--subnet", "10.97.0.0/24", "gone"])?;
    a.docker(&["network", "create", "-d", "loom-overlay", "--subnet", "10.98.0.0/24", "kept"])?;
    let gone = a.docker(&["network", "inspect", "--format", "{{.Id}}", "gone"])?.trim().to_string();
    let (ka, kb) = (sleep_on(a, "ka", "kept")?, sleep_on(b, "kb", "kept")?);
    let (_, gb) = (sleep_on(a, "ga", "gone")?, sleep_on(b, "gb", "gone")?);
    ping(a, "ga", &gb)?;
    ping(a, "ka", &kb)?;
    let keys_of = |id: &str| -> Result<Vec<String>> {
        Ok(etcd.keys(c, 0, "/netloom/v1/")?.into_iter().filter(|k| k.contains(id)).collect())
    };
    ensure!(keys_of(&gone)?.iter().any(|k| k.contains("/overlay/networks/")), "no store record: {:?}", keys_of(&gone)?);
    let both = |h: &Host| -> Result<bool> { Ok(namespaces(h)?.split_whitespace().count() == 2) };
    ensure!(both(a)? && both(b)?, "overlay namespaces: {:?} / {:?}", namespaces(a)?, namespaces(b)?);
    step(t0, "two global networks on two hosts");

    a.docker(&["rm", "-f", "ga"])?;
    b.docker(&["rm", "-f", "gb"])?;
    proxy.swallow(&["NetworkDriver.DeleteNetwork"]);
    a.docker(&["network", "rm", "gone"])?;
    ensure!(!proxy.swallowed("NetworkDriver.DeleteNetwork").is_empty(), "dockerd never asked to delete the network");
    proxy.forward_all();
    // The driver never heard: everything is still there.
    ensure!(!keys_of(&gone)?.is_empty() && both(a)? && both(b)?, "removed before reconciliation ran");
    step(t0, "Docker forgot `gone` (DeleteNetwork swallowed)");

    let limit = plugin.reconcile_period() + Duration::from_secs(4);
    wait_until(limit, Duration::from_millis(200), "`gone` to be removed everywhere", || {
        Ok(keys_of(&gone)?.is_empty()
            && namespaces(a)?.split_whitespace().count() == 1
            && namespaces(b)?.split_whitespace().count() == 1)
    })?;
    step(t0, "`gone` removed from both hosts and the store");
    // What Docker still has is kept, over two more periods.
    std::thread::sleep(plugin.reconcile_period() * 2);
    ping(a, "ka", &kb)?;
    ping(b, "kb", &ka)?;
    ensure!(namespaces(a)?.split_whitespace().count() == 1, "A lost `kept`: {:?}", namespaces(a)?);
    step(t0, "`kept` still works");

    a.docker(&["rm", "-f", "ka"])?;
    b.docker(&["rm", "-f", "kb"])?;
    a.docker(&["network", "rm", "kept"])?;
    for h in [a, b] {
        wait_until(Duration::from_secs(10), Duration::from_millis(200), "no overlay namespace", || {
            Ok(namespaces(h)?.is_empty())
        })?;
    }
    Ok(())
}

scenario_tests! {
    overlay_global_forgotten_docker20: "ovforget20" => forgotten_global_scenario,
    overlay_down_docker20: "ovdown20" => |c| down_scenario(c, DockerVersion::V20),
    overlay_down_docker26: "ovdown26" => |c| down_scenario(c, DockerVersion::V26),
}

#[test]
fn ping_summaries() {
    let out = "PING 10.96.0.3 (10.96.0.3): 56 data bytes\n\n--- 10.96.0.3 ping statistics ---\n\
               160 packets transmitted, 158 packets received, 1% packet loss\n";
    assert_eq!(ping_summary(out), Some((160, 158)));
    assert_eq!(ping_summary("ping: sendto: Network unreachable"), None);
}
