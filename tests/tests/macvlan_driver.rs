//! loom-macvlan against real dockerd (20.10 and 26): two hosts whose parent is their
//! underlay-facing `eth0` (inside the host namespaces), containers with disjoint `--ip-range`s
//! reaching each other and the segment's router over IPv4 and IPv6, bridge vs private mode, an
//! internal network on the driver's isolated parent, refused `-p`, a missing parent named in the
//! error, a driver crash, and removal leaving no link behind. VLAN parents (`eth0.50`) get their
//! own test; where the kernel has no 802.1q support it checks the error a user gets instead.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use netloom_tests::{no_ping, ping, scenario, scenario_tests, Cluster, DockerVersion, Host, HostConfig, IMAGE};

/// ping6, retried while duplicate address detection keeps fresh addresses tentative.
fn ping6(h: &Host, container: &str, target: &str) -> Result<()> {
    for _ in 0..8 {
        if h.container_exec(container, &["ping", "-6", "-c", "1", "-W", "1", target]).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    bail!("{container} cannot ping6 {target}")
}

fn run(h: &Host, name: &str, network: &str, extra: &[&str]) -> Result<()> {
    let mut argv = vec!["run", "-d", "--name", name, "--network", network];
    argv.extend_from_slice(extra);
    argv.extend_from_slice(&[IMAGE, "sleep", "600"]);
    h.docker(&argv).with_context(|| format!("starting {name} on {}", h.name()))?;
    Ok(())
}

fn network_id(h: &Host, network: &str) -> Result<String> {
    Ok(h.docker(&["network", "inspect", "--format", "{{.Id}}", network])?.trim().to_string())
}

/// Links the driver makes: endpoint macvlans (mv…), isolated parents (dm-…/dp-…), VLANs (….50).
fn driver_links(h: &Host) -> Result<Vec<String>> {
    let out = h.exec(&["ip", "-o", "link"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| n.starts_with("mv") || n.starts_with("dm-") || n.starts_with("dp-") || n.contains('.'))
        .collect())
}

fn macvlan_scenario(c: &Cluster, docker: DockerVersion) -> Result<()> {
    let hosts = c.add_hosts(vec![HostConfig::new("h1", docker), HostConfig::new("h2", docker)])?;
    let (h1, h2) = (&hosts[0], &hosts[1]);
    let p1 = h1.start_plugin("loom-macvlan", &["--log-level", "debug"])?;
    h2.start_plugin("loom-macvlan", &["--log-level", "debug"])?;
    let router = Cluster::gateway().to_string();

    // One segment, the underlay: each host hands out its own part of it.
    for (h, v4_range, v6_range) in
        [(h1, "10.250.0.64/28", "fd00:250::100/120"), (h2, "10.250.0.80/28", "fd00:250::200/120")]
    {
        let parent = format!("parent={}", h.underlay_iface());
        let v4 = ["--subnet", "10.250.0.0/24", "--gateway", &router, "--ip-range", v4_range];
        let v6 = ["--ipv6", "--subnet", "fd00:250::/64", "--ip-range", v6_range];
        h.network_create("loom-macvlan", "mv", &[&["-o", &parent][..], &v4, &v6].concat())
            .with_context(|| format!("network create on {}", h.name()))?;
    }
    run(h1, "a1", "mv", &[])?;
    run(h1, "a2", "mv", &["--ip", "10.250.0.70"])?;
    run(h2, "b1", "mv", &[])?;
    let a1 = h1.container_ip("a1", "mv")?;
    let b1 = h2.container_ip("b1", "mv")?;
    ensure!(
        a1.starts_with("10.250.0.6") && b1.starts_with("10.250.0.8"),
        "addresses outside the ranges: a1 {a1}, b1 {b1}"
    );

    ping(h1, "a1", &b1).context("across hosts")?;
    ping(h2, "b1", &a1).context("across hosts, the other way")?;
    ping(h1, "a1", "10.250.0.70").context("same host, bridge mode, static --ip")?;
    ping(h1, "a1", &router).context("the segment's router")?;
    let route = h1.container_exec("a1", &["ip", "route", "show", "default"])?;
    ensure!(route.contains(&format!("via {router}")), "a1's default route is {route:?}");
    ping6(h1, "a1", &h2.container_network_field("b1", "mv", "GlobalIPv6Address")?).context("IPv6 across hosts")?;

    // Ports cannot be published on a macvlan network: docker run says why.
    let err = h1.docker(&["run", "-d", "--name", "web", "--network", "mv", "-p", "8080:80", IMAGE, "sleep", "600"]);
    let text = format!("{:#}", err.err().context("docker run -p on a macvlan network succeeded")?);
    ensure!(text.contains("loom-macvlan cannot publish ports"), "unclear -p error: {text}");
    h1.docker(&["rm", "-f", "web"])?;

    // Private mode: containers on one parent cannot talk, even on the same host.
    let options = ["-o", "parent=eth0", "-o", "macvlan_mode=private", "-o", "com.docker.network.driver.mtu=1400"];
    h1.network_create("loom-macvlan", "mvp", &[&options[..], &["--subnet", "10.251.0.0/24"]].concat())?;
    run(h1, "p1", "mvp", &["--ip", "10.251.0.11"])?;
    run(h1, "p2", "mvp", &["--ip", "10.251.0.12"])?;
    no_ping(h1, "p1", "10.251.0.12")?;
    let mtu = h1.container_exec("p1", &["cat", "/sys/class/net/eth0/mtu"])?;
    ensure!(mtu.trim() == "1400", "p1's MTU is {mtu}");

    // No parent: the network's own isolated parent; --internal: no gateway, no default route.
    h1.docker(&["network", "create", "-d", "loom-macvlan", "--internal", "--subnet", "10.252.0.0/24", "mvi"])?;
    let isolated = format!("dm-{}", &network_id(h1, "mvi")?[..12]);
    ensure!(driver_links(h1)?.contains(&isolated), "no isolated parent {isolated}: {:?}", driver_links(h1)?);
    run(h1, "i1", "mvi", &["--ip", "10.252.0.11"])?;
    run(h1, "i2", "mvi", &["--ip", "10.252.0.12"])?;
    ping(h1, "i1", "10.252.0.12")?;
    let routes = h1.container_exec("i1", &["ip", "route"])?;
    ensure!(!routes.contains("default"), "internal network gave i1 a default route:\n{routes}");

    // A parent that does not exist is named in the error, and nothing is left of the attempt.
    let err = h1.network_create("loom-macvlan", "bad", &["-o", "parent=eth9", "--subnet", "10.253.0.0/24"]);
    let text = format!("{:#}", err.err().context("a network on a missing parent was created")?);
    ensure!(text.contains("parent interface eth9 does not exist"), "unclear error: {text}");

    // A driver crash: running containers keep talking, new ones join after the restart.
    p1.sigkill()?;
    ping(h1, "a1", &b1)?;
    p1.restart()?;
    run(h1, "a3", "mv", &[])?;
    ping(h1, "a3", &b1)?;

    // Removal leaves nothing: no macvlan, no isolated parent.
    h1.docker(&["rm", "-f", "a1", "a2", "a3", "p1", "p2", "i1", "i2"])?;
    h2.docker(&["rm", "-f", "b1"])?;
    for net in ["mv", "mvp", "mvi"] {
        h1.docker(&["network", "rm", net]).with_context(|| format!("removing {net}"))?;
    }
    h2.docker(&["network", "rm", "mv"])?;
    for h in [h1, h2] {
        let left = driver_links(h)?;
        ensure!(left.is_empty(), "links left on {}: {left:?}\n{}", h.name(), h.exec(&["ip", "-o", "link"])?);
    }
    ensure!(p1.is_running(), "loom-macvlan exited: {:?}", p1.exit_status());
    Ok(())
}

scenario_tests! {
    macvlan_docker20: "mv20" => |c| macvlan_scenario(c, DockerVersion::V20),
    macvlan_docker26: "mv26" => |c| macvlan_scenario(c, DockerVersion::V26),
}

/// Whether this kernel can make 802.1q links: tried on a dummy-free veth in a scratch namespace.
fn kernel_vlan_support() -> Result<Option<String>> {
    let probe = "ip link add vp0 type veth peer name vp1 && ip link add link vp0 name vp0.7 type vlan id 7";
    let out = std::process::Command::new("unshare").args(["--net", "sh", "-c", probe]).output()?;
    if out.status.success() {
        return Ok(None);
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    ensure!(
        stderr.contains("Unknown device type") || stderr.contains("not supported"),
        "VLAN probe failed oddly: {stderr}"
    );
    Ok(Some(stderr))
}

/// `parent=eth0.50` makes the sub-interface and removes it with the last network using it; a
/// sub-interface the user made stays.
#[test]
fn macvlan_vlan_parent() {
    netloom_tests::require_root().unwrap();
    if let Some(reason) = kernel_vlan_support().expect("probing VLAN support") {
        eprintln!("this kernel has no 802.1q VLAN support ({reason}): checking the error a user gets instead");
        scenario("mvnovlan", |c| {
            let h = c.add_host(HostConfig::new("h1", DockerVersion::V26))?;
            h.start_plugin("loom-macvlan", &[])?;
            let out = h.network_create("loom-macvlan", "v50", &["-o", "parent=eth0.50", "--subnet", "10.50.1.0/24"]);
            let err = match out {
                Ok(_) => bail!("a VLAN parent was accepted on a kernel without 802.1q"),
                Err(e) => format!("{e:#}"),
            };
            ensure!(err.contains("no 802.1q VLAN support"), "unclear error: {err}");
            ensure!(driver_links(&h)?.is_empty(), "links left behind: {:?}", driver_links(&h)?);
            ensure!(h.exec(&["ip", "link", "show", "eth0.50"]).is_err(), "eth0.50 was made");
            Ok(())
        });
        return;
    }
    scenario("mvvlan", |c| {
        let h = c.add_host(HostConfig::new("h1", DockerVersion::V26))?;
        h.start_plugin("loom-macvlan", &[])?;
        let create = |name: &str, parent: &str, subnet: &str| {
            h.network_create("loom-macvlan", name, &["-o", &format!("parent={parent}"), "--subnet", subnet])
        };
        create("v50a", "eth0.50", "10.50.1.0/24")?;
        create("v50b", "eth0.50", "10.50.2.0/24")?;
        h.exec(&["ip", "link", "add", "link", "eth0", "name", "eth0.60", "type", "vlan", "id", "60"])?;
        h.exec(&["ip", "link", "set", "eth0.60", "up"])?;
        create("v60", "eth0.60", "10.60.0.0/24")?;
        run(&h, "x1", "v50a", &[])?;
        run(&h, "x2", "v50b", &[])?;
        h.docker(&["rm", "-f", "x1", "x2"])?;
        h.docker(&["network", "rm", "v50a"])?;
        ensure!(driver_links(&h)?.contains(&"eth0.50".to_string()), "eth0.50 went while v50b uses it");
        h.docker(&["network", "rm", "v50b", "v60"])?;
        let left = driver_links(&h)?;
        ensure!(left == ["eth0.60"], "want only the user's eth0.60 left, got {left:?}");
        Ok(())
    });
}
