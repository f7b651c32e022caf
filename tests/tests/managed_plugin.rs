//! netloom drivers as Docker managed plugins (Docker 26): the bundle of
//! examples/managed-plugin/build.sh, `docker plugin create netloom/<driver>` and `enable`.
//!
//! loom-bridge: two containers talk and a published port answers a LAN neighbour; the plugin is
//! disabled (Docker refuses while a network uses it, so `-f`) and enabled again: traffic and the
//! port carried on throughout, and the driver, which asks Docker under the plugin's name, keeps
//! the network past its reconciliation; then everything is removed and the host is as before
//! (links, addresses, routes, iptables and nftables rules, Docker's plugin directory).
//! loom-overlay: the plugin starts with etcd as its store, carries a network with two containers
//! on one host and answers their names. loom-ipam: a managed IPAM plugin under loom-bridge keeps
//! its pool and addresses past its reconciliation.
//! (With the driver told its socket's name instead of the plugin's, the bridge and IPAM
//! scenarios fail: the reconciler removes the network, the pool.)

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use netloom_tests::{
    ping, scenario, Cluster, DockerVersion, Host, HostConfig, HostState, ManagedPlugin, UnderlayEtcd, IMAGE,
};

/// The drivers reconcile every 2 s here, so a driver that did not recognise its networks in
/// Docker would remove them within the test (two checks at least 2 s apart).
const RECONCILE: &str = "--reconcile-interval 2";
const RECONCILE_CONFIRMED: Duration = Duration::from_secs(7);

const WEB: &[&str] = &["httpd", "-f", "-p", "80", "-h", "/"];

/// Fetches `/etc/hostname` from the busybox httpd behind `url`'s published port, from `from`.
fn fetch(from: &Host, url: &str) -> Result<String> {
    Ok(from.exec(&["timeout", "5", "busybox", "wget", "-q", "-O-", url])?.trim().to_string())
}

/// The web container answers on its published port (retried briefly: httpd starts after `run`).
fn port_answers(from: &Host, url: &str, expect: &str) -> Result<()> {
    let t0 = Instant::now();
    loop {
        match fetch(from, url) {
            Ok(body) if body == expect => return Ok(()),
            other if t0.elapsed() > Duration::from_secs(10) => {
                anyhow::bail!("{url} from {}: {other:?}, expected {expect:?}", from.name())
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// A docker command's outcome in one line, for the log.
fn outcome(result: &Result<String>) -> String {
    match result {
        Ok(out) => format!("ok: {}", out.trim()),
        Err(e) => format!("refused: {}", format!("{e:#}").lines().find(|l| l.contains("daemon")).unwrap_or("?")),
    }
}

fn traffic(h: &Host, lan: &Host, url: &str, b_ip: &str, a_ip: &str) -> Result<()> {
    ping(h, "web1", b_ip)?;
    ping(h, "peer1", a_ip)?;
    port_answers(lan, url, "web1")
}

fn bridge_scenario(c: &Cluster) -> Result<()> {
    let h = c.add_host(HostConfig::new("h1", DockerVersion::V26))?;
    let lan = c.add_neighbour("lan")?;
    let before = HostState::take(&h)?;

    let t0 = Instant::now();
    let plugin = ManagedPlugin::create(&h, "loom-bridge")?;
    plugin.set(&[&format!("LOOM_ARGS={RECONCILE}")])?;
    plugin.enable()?;
    eprintln!("[managed] {} created and enabled in {:.2}s", plugin.name(), t0.elapsed().as_secs_f64());
    ensure!(plugin.enabled()?, "{} is not enabled", plugin.name());
    ensure!(
        h.path_inside(&format!("/run/docker/plugins/{}/loom-bridge.sock", plugin.id())).exists(),
        "no socket in the plugin's socket directory"
    );

    // Docker 26 finds a plugin's network driver only by its full name, with the tag.
    let untagged = h.network_create("netloom/loom-bridge", "web", &["--subnet", "10.67.0.0/24"]);
    eprintln!("[managed] -d netloom/loom-bridge (no tag): {}", outcome(&untagged));
    let net = h.network_create(plugin.name(), "web", &["--subnet", "10.67.0.0/24"])?.trim().to_string();
    let driver = h.docker(&["network", "inspect", "--format", "{{.Driver}}", "web"])?;
    eprintln!("[managed] Docker names the network's driver {:?}", driver.trim());
    let mut run_a =
        vec!["run", "-d", "--name", "web1", "--hostname", "web1", "--network", "web", "-p", "8080:80", IMAGE];
    run_a.extend_from_slice(WEB);
    h.docker(&run_a)?;
    h.docker(&["run", "-d", "--name", "peer1", "--network", "web", IMAGE, "sleep", "600"])?;
    let (a_ip, b_ip) = (h.container_ip("web1", "web")?, h.container_ip("peer1", "web")?);
    let url = format!("http://{}:8080/etc/hostname", h.underlay_ip());
    traffic(&h, &lan, &url, &b_ip, &a_ip).context("before disable")?;
    let bridge_of_net = format!("loom{}", &net[..11]);
    ensure!(!HostState::take(&h)?.lines_with(&bridge_of_net).is_empty(), "no bridge {bridge_of_net} on the host");

    // Docker refuses to disable a plugin a network uses; -f stops it anyway.
    let refused = plugin.disable(false);
    eprintln!("[managed] disable without -f: {}", outcome(&refused));
    ensure!(refused.is_err(), "Docker disabled a plugin its network uses without -f");
    ensure!(plugin.enabled()?, "a refused disable left the plugin disabled");
    plugin.disable(true)?;
    ensure!(!plugin.enabled()?, "still enabled after disable -f");
    // The kernel keeps the network while the driver is away.
    traffic(&h, &lan, &url, &b_ip, &a_ip).context("while disabled")?;
    let t1 = Instant::now();
    plugin.enable()?;
    eprintln!("[managed] enabled again in {:.2}s", t1.elapsed().as_secs_f64());
    // Past two reconciliations: a driver that looked for its networks under another name than
    // the plugin's would have removed the bridge by now.
    std::thread::sleep(RECONCILE_CONFIRMED);
    traffic(&h, &lan, &url, &b_ip, &a_ip).context("after enable")?;
    ensure!(!HostState::take(&h)?.lines_with(&bridge_of_net).is_empty(), "bridge {bridge_of_net} gone after enable");
    let removed: Vec<String> = plugin.log_lines().into_iter().filter(|l| l.contains("Docker has no such")).collect();
    ensure!(removed.is_empty(), "the driver removed what Docker has: {removed:?}");
    // A new container after the restart: the driver still serves.
    h.docker(&["run", "-d", "--name", "peer2", "--network", "web", IMAGE, "sleep", "600"])?;
    ping(&h, "peer2", &a_ip)?;

    for name in ["web1", "peer1", "peer2"] {
        h.docker(&["rm", "-f", name])?;
    }
    h.docker(&["network", "rm", "web"])?;
    plugin.disable(false)?;
    plugin.remove()?;
    ensure!(!plugin.data_dir().exists(), "{} is left after plugin rm", plugin.data_dir().display());
    let listed = h.docker(&["plugin", "ls", "--quiet"])?;
    ensure!(listed.trim().is_empty(), "plugins left: {listed}");
    let after = HostState::take(&h)?;
    // Nothing left: no bridge, veth, address, route, rule, and (with the last owner gone) not
    // netloom's firewall skeleton either.
    if let Some(diff) = before.diff(&after) {
        anyhow::bail!("the host differs after plugin rm:\n{diff}");
    }
    Ok(())
}

#[test]
fn managed_loom_bridge_docker26() {
    scenario("mplugin", bridge_scenario);
}

fn overlay_scenario(c: &Cluster) -> Result<()> {
    let etcd = UnderlayEtcd::start(c, 1)?;
    let h = c.add_host(HostConfig::new("h1", DockerVersion::V26))?;
    let plugin = ManagedPlugin::create(&h, "loom-overlay")?;
    plugin
        .set(&[&format!("NETLOOM_STORE={}", etcd.url(c)), &format!("LOOM_ARGS=--advertise-addr eth0 {RECONCILE}")])?;
    plugin.enable()?;
    h.network_create(plugin.name(), "ov", &["--subnet", "10.68.0.0/24"])?;
    for name in ["o1", "o2"] {
        h.docker(&["run", "-d", "--name", name, "--network", "ov", IMAGE, "sleep", "600"])?;
    }
    let o2 = h.container_ip("o2", "ov")?;
    ping(&h, "o1", &o2)?;
    // The driver's DNS answers a container of this host, known from its namespace (read through
    // the exec-root mount at Join) and from Docker's Engine API.
    let dns = h.underlay_ip().to_string();
    let t0 = Instant::now();
    let answer = loop {
        let answer = h.container_exec("o1", &["nslookup", "o2.ov", &dns]);
        match answer {
            Ok(text) if text.contains(&o2) => break text,
            other if t0.elapsed() > Duration::from_secs(10) => anyhow::bail!("o2.ov asked of {dns}: {other:?}"),
            _ => std::thread::sleep(Duration::from_millis(250)),
        }
    };
    eprintln!("[managed] o2.ov from o1, asked of the plugin's DNS: {}", answer.replace('\n', " | "));
    std::thread::sleep(RECONCILE_CONFIRMED);
    ping(&h, "o1", &o2).context("after two reconciliations")?;
    for name in ["o1", "o2"] {
        h.docker(&["rm", "-f", name])?;
    }
    h.docker(&["network", "rm", "ov"])?;
    plugin.disable(false)?;
    plugin.remove()?;
    ensure!(!plugin.data_dir().exists(), "{} is left after plugin rm", plugin.data_dir().display());
    Ok(())
}

#[test]
fn managed_loom_overlay_docker26() {
    scenario("mplugov", overlay_scenario);
}

fn ipam_scenario(c: &Cluster) -> Result<()> {
    let h = c.add_host(HostConfig::new("h1", DockerVersion::V26))?;
    h.start_plugin("loom-bridge", &[])?;
    let plugin = ManagedPlugin::create(&h, "loom-ipam")?;
    plugin.set(&[&format!("LOOM_ARGS={RECONCILE}")])?;
    plugin.enable()?;
    h.network_create("loom-bridge", "pool", &["--ipam-driver", plugin.name(), "--subnet", "10.69.0.0/24"])?;
    h.docker(&["run", "-d", "--name", "first", "--network", "pool", IMAGE, "sleep", "600"])?;
    let first = h.container_ip("first", "pool")?;
    // Past two reconciliations: an IPAM driver that looked for its pools in Docker under another
    // name than the plugin's would have released them, and handed the address out again.
    std::thread::sleep(RECONCILE_CONFIRMED);
    h.docker(&["run", "-d", "--name", "second", "--network", "pool", IMAGE, "sleep", "600"])?;
    let second = h.container_ip("second", "pool")?;
    ensure!(first != second, "the managed IPAM plugin handed out {first} twice");
    ping(&h, "second", &first)?;
    let released: Vec<String> =
        plugin.log_lines().into_iter().filter(|l| l.contains("no Docker network has it")).collect();
    ensure!(released.is_empty(), "the IPAM plugin released what Docker has: {released:?}");
    for name in ["first", "second"] {
        h.docker(&["rm", "-f", name])?;
    }
    h.docker(&["network", "rm", "pool"])?;
    plugin.disable(false)?;
    plugin.remove()?;
    ensure!(!plugin.data_dir().exists(), "{} is left after plugin rm", plugin.data_dir().display());
    Ok(())
}

#[test]
fn managed_loom_ipam_docker26() {
    scenario("mplugip", ipam_scenario);
}
