//! loom-host against real dockerd (20.10 and 26): containers reach the host and each other
//! through host routes (IPv4 and IPv6), the host reaches them, routes come and go with
//! endpoints, masquerade only when asked for, `-p` published (from outside, the host and another
//! container), and a driver SIGKILL plus restart keeps traffic and ports going and lets new
//! containers join; removal leaves no link, route or rule. Docker 20.10 runs it with the iptables
//! firewall backend, Docker 26 with nftables.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use netloom_tests::{no_ping, ping, scenario_tests, wait_until, Cluster, DockerVersion, Host, HostConfig, IMAGE};

fn host_ping(h: &Host, target: &str, v6: bool) -> Result<()> {
    let family = if v6 { "-6" } else { "-4" };
    // IPv6 retries while duplicate address detection keeps the container's address tentative.
    for _ in 0..8 {
        if h.exec(&["busybox", "ping", family, "-c", "1", "-W", "1", target]).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    bail!("host {} cannot ping {target}", h.name())
}

fn run(h: &Host, name: &str, network: &str) -> Result<String> {
    h.docker(&["run", "-d", "--name", name, "--network", network, IMAGE, "sleep", "600"])
        .with_context(|| format!("starting {name}"))?;
    h.container_ip(name, network)
}

/// The host's routes to container addresses (`<ip> dev lh… scope link`).
fn host_routes(h: &Host) -> Result<String> {
    let v4 = h.exec(&["ip", "-4", "route"])?;
    let v6 = h.exec(&["ip", "-6", "route"])?;
    Ok(v4.lines().chain(v6.lines()).filter(|l| l.contains(" dev lh")).collect::<Vec<_>>().join("\n"))
}

/// `/etc/hostname` of the busybox httpd behind a published port, fetched by `argv`'s runner.
fn fetch(what: &str, out: Result<String>) -> Result<String> {
    Ok(out.with_context(|| format!("fetching the published port from {what}"))?.trim().to_string())
}

fn host_scenario(c: &Cluster, docker: DockerVersion, firewall: &str) -> Result<()> {
    let h = c.add_host(HostConfig::new("h1", docker))?;
    let plugin = h.start_plugin("loom-host", &["--firewall", firewall, "--log-level", "debug"])?;
    let host_ip = h.underlay_ip().to_string();
    let outside = Cluster::gateway().to_string();

    h.network_create("loom-host", "lh", &["--subnet", "172.28.1.0/24", "--ipv6", "--subnet", "fd00:28:1::/64"])?;
    let masquerade = "com.docker.network.bridge.enable_ip_masquerade=true";
    h.network_create("loom-host", "lhm", &["--subnet", "172.28.2.0/24", "-o", masquerade])?;
    let c1 = run(&h, "c1", "lh")?;
    let c2 = run(&h, "c2", "lh")?;
    let m1 = run(&h, "m1", "lhm")?;

    // The host routes each address to its veth; containers go through the link-local gateway.
    let routes = host_routes(&h)?;
    for ip in [&c1, &c2, &m1] {
        ensure!(routes.lines().any(|r| r.starts_with(&format!("{ip} dev lh"))), "no host route to {ip}:\n{routes}");
    }
    let default = h.container_exec("c1", &["ip", "route", "show", "default"])?;
    ensure!(default.contains("via 169.254.1.1 dev eth0"), "c1's default route: {default:?}");
    let addrs = h.exec(&["ip", "-o", "addr"])?;
    ensure!(!addrs.contains("172.28."), "the host holds a subnet address:\n{addrs}");

    host_ping(&h, &c1, false).context("host to container")?;
    ping(&h, "c1", &host_ip).context("container to host")?;
    ping(&h, "c1", &c2).context("same subnet, through the host (proxy ARP)")?;
    ping(&h, "c2", &m1).context("another network, through the host")?;
    // The underlay router has no route back to 172.28/16: only the masqueraded network gets out.
    ping(&h, "m1", &outside).context("egress with masquerade")?;
    no_ping(&h, "c1", &outside).context("egress without masquerade")?;

    // IPv6: a /128 host route and fe80::1 as the gateway.
    let c1_v6 = h.container_network_field("c1", "lh", "GlobalIPv6Address")?;
    ensure!(c1_v6.starts_with("fd00:28:1::"), "c1 has IPv6 address {c1_v6:?}");
    host_ping(&h, &c1_v6, true).context("host to container over IPv6")?;
    let default6 = h.container_exec("c1", &["ip", "-6", "route", "show", "default"])?;
    ensure!(default6.contains("via fe80::1 dev eth0"), "c1's IPv6 default route: {default6:?}");

    // -p: DNAT on the host to the routed container, from outside, the host itself and a container.
    h.docker(&[
        "run",
        "-d",
        "--name",
        "web",
        "--hostname",
        "web",
        "--network",
        "lh",
        "-p",
        "8080:80",
        IMAGE,
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/",
    ])?;
    let url = format!("http://{host_ip}:8080/etc/hostname");
    let wget = ["timeout", "5", "busybox", "wget", "-q", "-O-"];
    let from_outside = || fetch("outside", c.underlay_exec(&[&wget[..], &[url.as_str()]].concat()));
    // `docker run -d` returns once httpd is started, not once it listens: wait for it inside first.
    let inside = format!("http://{}:80/etc/hostname", h.container_ip("web", "lh")?);
    wait_until(Duration::from_secs(10), Duration::from_millis(100), "web's httpd to listen", || {
        Ok(h.container_exec("web", &[&wget[..], &[inside.as_str()]].concat()).is_ok())
    })?;
    ensure!(from_outside()? == "web", "from outside");
    ensure!(
        fetch("the host", h.exec(&[&wget[..], &["http://127.0.0.1:8080/etc/hostname"]].concat()))? == "web",
        "from 127.0.0.1"
    );
    ensure!(fetch("the host", h.exec(&[&wget[..], &[url.as_str()]].concat()))? == "web", "from the host's address");
    ensure!(
        fetch("c1", h.container_exec("c1", &["timeout", "5", "wget", "-q", "-O-", &url]))? == "web",
        "from a container"
    );

    // Routes go with their endpoint.
    h.docker(&["rm", "-f", "c2"])?;
    let routes = host_routes(&h)?;
    ensure!(!routes.contains(&format!("{c2} ")), "route to removed c2 left:\n{routes}");

    // A crash: traffic goes on; after the restart new containers join and reach the others.
    plugin.sigkill()?;
    ping(&h, "c1", &m1).context("during the crash")?;
    plugin.restart()?;
    host_ping(&h, &c1, false).context("after the restart")?;
    ensure!(from_outside()? == "web", "published port after the restart");
    // loom-bridge shares the firewall: its start-up sweep must leave loom-host's policies alone.
    h.start_plugin("loom-bridge", &["--firewall", firewall])?;
    ensure!(from_outside()? == "web", "published port after loom-bridge started");
    let c3 = run(&h, "c3", "lh")?;
    ping(&h, "c3", &c1).context("a new container after the restart")?;
    host_ping(&h, &c3, false)?;

    // Removal leaves no link, route or firewall rule.
    h.docker(&["rm", "-f", "c1", "c3", "m1", "web"])?;
    h.docker(&["network", "rm", "lh", "lhm"])?;
    let links = h.exec(&["ip", "-o", "link"])?;
    ensure!(!links.contains(": lh") && !links.contains(": lp"), "links left:\n{links}");
    let routes = host_routes(&h)?;
    ensure!(routes.is_empty(), "routes left:\n{routes}");
    let rules = h.exec(&["iptables-save"])?;
    let ours: Vec<&str> = rules.lines().filter(|l| l.contains("loom-host.")).collect();
    ensure!(ours.is_empty(), "iptables rules left: {ours:#?}");
    let nft = h.exec(&["nft", "list", "ruleset"])?;
    ensure!(!nft.contains("loom-host.") && !nft.contains("172.28."), "nftables rules left:\n{nft}");
    ensure!(plugin.is_running(), "loom-host exited: {:?}", plugin.exit_status());
    Ok(())
}

scenario_tests! {
    host_docker20: "lh20" => |c| host_scenario(c, DockerVersion::V20, "iptables"),
    host_docker26: "lh26" => |c| host_scenario(c, DockerVersion::V26, "nftables"),
}
