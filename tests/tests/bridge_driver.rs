//! loom-bridge against real dockerd, for each firewall backend and both Docker versions: what a
//! user of Docker's built-in bridge relies on (connectivity, egress through masquerade,
//! isolation, icc=false, internal networks, published ports from everywhere, MTU, bridge name,
//! static addresses, IPv6), a driver crash in the middle, and removal without leftovers.

use anyhow::{ensure, Context, Result};
use netloom_tests::{no_ping, ping, scenario_tests, Cluster, DockerVersion, Host, HostConfig, IMAGE};

/// Fetches `/etc/hostname` from the busybox httpd behind a published port.
fn fetch_from_container(h: &Host, container: &str, url: &str) -> Result<String> {
    let out = h
        .container_exec(container, &["timeout", "5", "wget", "-q", "-O-", url])
        .with_context(|| format!("{container} cannot fetch {url}"))?;
    Ok(out.trim().to_string())
}

fn fetch_from_host(h: &Host, url: &str) -> Result<String> {
    let out = h
        .exec(&["timeout", "5", "busybox", "wget", "-q", "-O-", url])
        .with_context(|| format!("host {} cannot fetch {url}", h.name()))?;
    Ok(out.trim().to_string())
}

fn run_container(h: &Host, name: &str, args: &[&str]) -> Result<()> {
    let mut argv = vec!["run", "-d", "--name", name, "--hostname", name];
    argv.extend_from_slice(args);
    h.docker(&argv).with_context(|| format!("starting {name}"))?;
    Ok(())
}

const WEB: &[&str] = &["httpd", "-f", "-p", "80", "-h", "/"];

fn bridge_scenario(c: &Cluster, docker: DockerVersion, firewall: &str) -> Result<()> {
    let hosts = c.add_hosts(vec![HostConfig::new("h1", docker), HostConfig::new("h2", docker)])?;
    let (h1, h2) = (&hosts[0], &hosts[1]);
    let plugin = h1.start_plugin("loom-bridge", &["--firewall", firewall, "--log-level", "debug"])?;
    let h1_ip = h1.underlay_ip().to_string();
    let outside = Cluster::gateway().to_string();

    let (name, mtu) = ("com.docker.network.bridge.name=lb-one", "com.docker.network.driver.mtu=1400");
    h1.network_create("loom-bridge", "n1", &["--subnet", "172.30.1.0/24", "-o", name, "-o", mtu])?;
    h1.network_create("loom-bridge", "n2", &["--subnet", "172.30.2.0/24"])?;
    let no_icc = "com.docker.network.bridge.enable_icc=false";
    h1.network_create("loom-bridge", "n3", &["--subnet", "172.30.3.0/24", "-o", no_icc])?;
    h1.network_create("loom-bridge", "n4", &["--internal", "--subnet", "172.30.4.0/24"])?;

    let mut web = vec!["--network", "n1", "--ip", "172.30.1.10", "-p", "8080:80", IMAGE];
    web.extend_from_slice(WEB);
    run_container(h1, "a1", &web)?;
    for (name, net) in [("a2", "n1"), ("b1", "n2"), ("c1", "n3"), ("c2", "n3"), ("d1", "n4"), ("d2", "n4")] {
        run_container(h1, name, &["--network", net, IMAGE, "sleep", "600"])?;
    }

    // One network: containers reach each other, with the static address, MTU and bridge name asked for.
    ping(h1, "a2", "172.30.1.10")?;
    let mtu = h1.container_exec("a1", &["cat", "/sys/class/net/eth0/mtu"])?;
    ensure!(mtu.trim() == "1400", "a1's eth0 MTU is {mtu}");
    let bridge = h1.exec(&["ip", "-o", "link", "show", "lb-one"])?;
    ensure!(bridge.contains("mtu 1400"), "bridge lb-one: {bridge}");

    // Egress: the underlay gateway has no route to 172.30.0.0/16, so replies need masquerade.
    ping(h1, "a2", &outside)?;
    ping(h1, "c1", &outside)?;
    // Isolation between networks, icc=false, internal networks.
    no_ping(h1, "b1", "172.30.1.10")?;
    no_ping(h1, "a2", &h1.container_ip("b1", "n2")?)?;
    no_ping(h1, "c1", &h1.container_ip("c2", "n3")?)?;
    ping(h1, "d1", &h1.container_ip("d2", "n4")?)?;
    no_ping(h1, "d1", &outside)?;

    // The published port, from another host, another network, the same network and the host itself.
    let url = format!("http://{h1_ip}:8080/etc/hostname");
    ensure!(fetch_from_host(h2, &url)? == "a1", "from another host");
    ensure!(fetch_from_container(h1, "b1", &url)? == "a1", "from another network");
    ensure!(fetch_from_container(h1, "a2", &url)? == "a1", "from the same network (hairpin)");
    ensure!(fetch_from_container(h1, "a1", &url)? == "a1", "from the container itself");
    ensure!(fetch_from_host(h1, "http://127.0.0.1:8080/etc/hostname")? == "a1", "from the host's 127.0.0.1");
    ensure!(fetch_from_host(h1, &url)? == "a1", "from the host's own address");

    // A port already published is refused with a clear error.
    let mut clash = vec!["--network", "n2", "-p", "8080:80", IMAGE];
    clash.extend_from_slice(WEB);
    let err = h1
        .docker(&[&["run", "-d", "--name", "clash"][..], &clash].concat())
        .err()
        .context("a second -p 8080 was accepted")?;
    ensure!(format!("{err:#}").contains("8080"), "unclear conflict error: {err:#}");
    let _ = h1.docker(&["rm", "-f", "clash"]);

    // A crash: traffic and published ports go on, the driver comes back and takes new containers.
    plugin.sigkill()?;
    ping(h1, "a2", "172.30.1.10")?;
    plugin.restart()?;
    ensure!(fetch_from_host(h2, &url)? == "a1", "published port after restart");
    run_container(h1, "a3", &["--network", "n1", IMAGE, "sleep", "600"])?;
    ping(h1, "a3", "172.30.1.10")?;
    no_ping(h1, "b1", "172.30.1.10")?;

    // Removal leaves nothing of ours.
    h1.docker(&["rm", "-f", "a1", "a2", "a3", "b1", "c1", "c2", "d1", "d2"])?;
    for net in ["n1", "n2", "n3", "n4"] {
        h1.docker(&["network", "rm", net]).with_context(|| format!("removing {net}"))?;
    }
    let links = h1.exec(&["ip", "-o", "link"])?;
    ensure!(!links.contains("lb-one") && !links.contains("loom") && !links.contains(": vl"), "links left: {links}");
    assert_no_rules(h1)?;
    ensure!(plugin.is_running(), "loom-bridge exited: {:?}", plugin.exit_status());
    Ok(())
}

/// No firewall rule of a removed network is left in the host; the shared skeleton (rules tagged
/// `netloom:base` and the one `netloom:compat` rule) stays by design.
fn assert_no_rules(h: &Host) -> Result<()> {
    let iptables = h.exec(&["iptables-save"])?;
    let ours: Vec<&str> = iptables
        .lines()
        .filter(|l| l.starts_with("-A") && l.contains("netloom"))
        .filter(|l| !l.contains("\"netloom:base\"") && !l.contains("\"netloom:compat\""))
        .collect();
    ensure!(ours.is_empty(), "iptables rules left: {ours:#?}");
    let nft = h.exec(&["nft", "list", "ruleset"])?;
    ensure!(!nft.contains("172.30."), "nft rules for removed networks left:\n{nft}");
    Ok(())
}

fn ipv6_scenario(c: &Cluster, docker: DockerVersion, firewall: &str) -> Result<()> {
    let h = c.add_host(HostConfig::new("h1", docker))?;
    h.start_plugin("loom-bridge", &["--firewall", firewall])?;
    h.network_create("loom-bridge", "v6", &["--ipv6", "--subnet", "172.31.9.0/24", "--subnet", "fd00:9::/64"])?;
    run_container(&h, "x1", &["--network", "v6", IMAGE, "sleep", "600"])?;
    run_container(&h, "x2", &["--network", "v6", IMAGE, "sleep", "600"])?;
    let x1 = h.container_network_field("x1", "v6", "GlobalIPv6Address")?;
    ensure!(x1.starts_with("fd00:9::"), "x1 has IPv6 address {x1:?}");
    let mut tries = 0;
    // Duplicate address detection keeps a fresh IPv6 address tentative for a moment.
    while h.container_exec("x2", &["ping", "-6", "-c", "1", "-W", "2", &x1]).is_err() {
        tries += 1;
        ensure!(tries < 5, "x2 cannot ping6 {x1}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    h.docker(&["rm", "-f", "x1", "x2"])?;
    h.docker(&["network", "rm", "v6"])?;
    Ok(())
}

scenario_tests! {
    bridge_docker20_iptables: "br20ipt" => |c| bridge_scenario(c, DockerVersion::V20, "iptables"),
    bridge_docker20_nftables: "br20nft" => |c| bridge_scenario(c, DockerVersion::V20, "nftables"),
    bridge_docker26_iptables: "br26ipt" => |c| bridge_scenario(c, DockerVersion::V26, "iptables"),
    bridge_docker26_nftables: "br26nft" => |c| bridge_scenario(c, DockerVersion::V26, "nftables"),
    bridge_ipv6_docker20: "br6v20" => |c| ipv6_scenario(c, DockerVersion::V20, "nftables"),
    bridge_ipv6_docker26: "br6v26" => |c| ipv6_scenario(c, DockerVersion::V26, "iptables"),
}
