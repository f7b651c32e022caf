//! loom-bridge's bypass of the bridge between endpoints of one network (Docker 26, nftables):
//! the redirects carry container-to-container traffic (their hit counters rise), an icc=false
//! network gets none and stays isolated, one made with `-o fast_path=false` gets none and talks
//! through the bridge, a container of another network addressing frames to a
//! fast-path container's MAC gets nothing through, a restarted driver puts the block back in
//! line, and nothing of it is left in tc once the network is removed.

use anyhow::{ensure, Context, Result};
use netloom_tests::{bin_dir, ping, ping_replies, scenario_tests, Cluster, DockerVersion, Host, HostConfig, IMAGE};

fn run_container(h: &Host, name: &str, net: &str, ip: &str) -> Result<()> {
    h.docker(&["run", "-d", "--name", name, "--network", net, "--ip", ip, IMAGE, "sleep", "600"])
        .with_context(|| format!("starting {name}"))
        .map(drop)
}

/// The network's filter block, as loom-bridge numbers it from the bridge's ifindex.
fn block_of(h: &Host, bridge: &str) -> Result<u32> {
    let index: u32 = h.exec(&["cat", &format!("/sys/class/net/{bridge}/ifindex")])?.trim().parse()?;
    Ok(0x6e6c_0000 ^ index)
}

/// `tc -s filter show block N`: an empty text when the block does not exist.
fn block_text(h: &Host, block: u32) -> String {
    h.exec(&["tc", "-s", "filter", "show", "block", &block.to_string()]).unwrap_or_default()
}

/// The number of redirects in the block and the packets they redirected so far.
fn redirects(h: &Host, block: u32) -> (usize, u64) {
    let text = block_text(h, block);
    let filters = text.lines().filter(|l| l.contains("mirred (Egress Redirect")).count();
    let packets = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Sent "))
        .filter_map(|rest| rest.split_whitespace().nth(2)?.parse::<u64>().ok())
        .sum();
    (filters, packets)
}

/// ICMP echo requests `container` has received so far.
fn echoes_received(h: &Host, container: &str) -> Result<u64> {
    let snmp = h.container_exec(container, &["cat", "/proc/net/snmp"])?;
    let mut icmp = snmp.lines().filter(|l| l.starts_with("Icmp:"));
    let (names, values) = (icmp.next().context("no Icmp header")?, icmp.next().context("no Icmp values")?);
    let at = names.split_whitespace().position(|n| n == "InEchos").context("no InEchos")?;
    Ok(values.split_whitespace().nth(at).context("short Icmp line")?.parse()?)
}

/// Echo replies `from` gets out of `count` pings to `to` (0 is an answer, not an error).
fn replies(h: &Host, from: &str, to: &str, count: u32) -> Result<u32> {
    let script = format!("ping -c {count} -W 1 {to}; true");
    Ok(ping_replies(&h.container_exec(from, &["sh", "-c", &script])?))
}

/// Makes `container` send frames for `ip` straight to `mac`, on its own segment.
fn address_frames_to(h: &Host, container: &str, ip: &str, mac: &str) -> Result<()> {
    let on_link = format!("{ip}/32");
    h.exec_in_container_netns(container, &["ip", "route", "replace", &on_link, "dev", "eth0"])?;
    h.exec_in_container_netns(
        container,
        &["ip", "neigh", "replace", ip, "lladdr", mac, "dev", "eth0", "nud", "permanent"],
    )?;
    Ok(())
}

/// The fast path of `network` as `loomctl inspect` shows it.
fn inspected_fast_path(h: &Host, network: &str) -> Result<serde_json::Value> {
    let loomctl = bin_dir().join("loomctl");
    let docker = format!("unix://{}", h.docker_socket().display());
    let text = h.exec(&[&loomctl.display().to_string(), "--docker-host", &docker, "inspect", network])?;
    let inspected: serde_json::Value = serde_json::from_str(&text).context("loomctl inspect printed no JSON")?;
    Ok(inspected["held"]["fast_path"].clone())
}

fn ports_of(h: &Host, bridge: &str) -> Result<Vec<String>> {
    let out = h.exec(&["ip", "-o", "link", "show", "master", bridge])?;
    Ok(out.lines().filter_map(|l| Some(l.split(": ").nth(1)?.split('@').next()?.to_string())).collect())
}

fn fastpath_scenario(c: &Cluster) -> Result<()> {
    let h = c.add_host(HostConfig::new("h1", DockerVersion::V26))?;
    let plugin = h.start_plugin("loom-bridge", &["--firewall", "nftables", "--log-level", "debug"])?;
    let name = |b: &str| format!("com.docker.network.bridge.name={b}");
    h.network_create("loom-bridge", "fp1", &["--subnet", "172.30.11.0/24", "-o", &name("lbfp1")])?;
    h.network_create("loom-bridge", "fp2", &["--subnet", "172.30.12.0/24", "-o", &name("lbfp2")])?;
    let no_icc = "com.docker.network.bridge.enable_icc=false";
    h.network_create("loom-bridge", "fp3", &["--subnet", "172.30.13.0/24", "-o", &name("lbfp3"), "-o", no_icc])?;
    let off = ["--subnet", "172.30.14.0/24", "-o", &name("lbfp4"), "-o", "fast_path=false"];
    h.network_create("loom-bridge", "fp4", &off)?;
    for (container, net, ip) in [
        ("a1", "fp1", "172.30.11.10"),
        ("a2", "fp1", "172.30.11.11"),
        ("b1", "fp2", "172.30.12.10"),
        ("b2", "fp2", "172.30.12.11"),
        ("c1", "fp3", "172.30.13.10"),
        ("c2", "fp3", "172.30.13.11"),
        ("d1", "fp4", "172.30.14.10"),
        ("d2", "fp4", "172.30.14.11"),
    ] {
        run_container(&h, container, net, ip)?;
    }
    let block = block_of(&h, "lbfp1")?;

    // The redirects carry the traffic between the two containers of fp1.
    let (filters, before) = redirects(&h, block);
    ensure!(filters == 2, "fp1's block holds {filters} redirects, not 2:\n{}", block_text(&h, block));
    let shown = inspected_fast_path(&h, "fp1")?;
    let listed = shown["redirects"].as_array().map_or(0, Vec::len);
    ensure!(shown["block"] == block && listed == 2, "loomctl inspect fp1 shows {shown}");
    ensure!(inspected_fast_path(&h, "fp3")?["enabled"] == false, "fp3 (icc=false) has a fast path");
    let echoes = echoes_received(&h, "a1")?;
    ensure!(replies(&h, "a2", "172.30.11.10", 5)? == 5, "a2 -> a1 over the fast path");
    ensure!(echoes_received(&h, "a1")? - echoes >= 5, "a1 answers on its own network");
    let (_, after) = redirects(&h, block);
    ensure!(after >= before + 10, "the redirects carried {} packets of 10 pings and replies", after - before);

    // An icc=false network: no binding on its ports, and its containers still cannot talk.
    for port in ports_of(&h, "lbfp3")? {
        let qdiscs = h.exec(&["tc", "qdisc", "show", "dev", &port])?;
        ensure!(!qdiscs.contains("clsact"), "icc=false port {port} has {qdiscs}");
    }
    ensure!(replies(&h, "c1", "172.30.13.11", 3)? == 0, "c1 reached c2 on an icc=false network");
    // Turned off by option: no binding, the containers talk through the bridge.
    for port in ports_of(&h, "lbfp4")? {
        let qdiscs = h.exec(&["tc", "qdisc", "show", "dev", &port])?;
        ensure!(!qdiscs.contains("clsact"), "fast_path=false port {port} has {qdiscs}");
    }
    ensure!(replies(&h, "d1", "172.30.14.11", 3)? == 3, "d1 cannot reach d2 through the bridge");
    ensure!(inspected_fast_path(&h, "fp4")?["enabled"] == false, "fp4 (fast_path=false) has a fast path");

    // Another network's container addressing frames to a1's MAC: first shown to work towards a
    // container of its own network, then nothing reaches a1.
    let b2_mac = h.container_network_field("b2", "fp2", "MacAddress")?;
    address_frames_to(&h, "b1", "172.30.12.11", &b2_mac)?;
    ensure!(replies(&h, "b1", "172.30.12.11", 3)? == 3, "b1's hand-addressed frames reach b2");
    let a1_mac = h.container_network_field("a1", "fp1", "MacAddress")?;
    address_frames_to(&h, "b1", "172.30.11.10", &a1_mac)?;
    let echoes = echoes_received(&h, "a1")?;
    let got = replies(&h, "b1", "172.30.11.10", 5)?;
    let reached = echoes_received(&h, "a1")? - echoes;
    ensure!(got == 0 && reached == 0, "frames from fp2 to a1's MAC: {reached} of 5 reached a1, {got} answered");

    // A restarted driver removes a stale redirect and puts back a missing one.
    plugin.sigkill()?;
    let a1_port = ports_of(&h, "lbfp1")?.into_iter().next().context("fp1 has no port")?;
    let block_arg = block.to_string();
    h.exec(&["tc", "filter", "del", "block", &block_arg])?;
    let stale = [
        "tc",
        "filter",
        "add",
        "block",
        &block_arg,
        "protocol",
        "all",
        "pref",
        "20044",
        "u32",
        "match",
        "ether",
        "dst",
        "02:42:ac:1e:0b:63",
        "action",
        "mirred",
        "egress",
        "redirect",
        "dev",
        &a1_port,
    ];
    h.exec(&stale)?;
    ensure!(redirects(&h, block).0 == 1, "the stale redirect was not made:\n{}", block_text(&h, block));
    plugin.restart()?;
    let text = block_text(&h, block);
    ensure!(redirects(&h, block).0 == 2, "after the restart:\n{text}");
    ensure!(!text.contains("ac1e0b63"), "the stale redirect is still there:\n{text}");
    let (_, before) = redirects(&h, block);
    ping(&h, "a1", "172.30.11.11")?;
    ensure!(redirects(&h, block).1 >= before + 2, "the restored redirects carry no traffic");

    // Removal leaves nothing in tc.
    h.docker(&["rm", "-f", "a1", "a2", "b1", "b2", "c1", "c2", "d1", "d2"])?;
    for net in ["fp1", "fp2", "fp3", "fp4"] {
        h.docker(&["network", "rm", net]).with_context(|| format!("removing {net}"))?;
    }
    let qdiscs = h.exec(&["tc", "qdisc", "show"])?;
    ensure!(!qdiscs.contains("clsact"), "qdiscs left: {qdiscs}");
    ensure!(redirects(&h, block).0 == 0, "redirects left:\n{}", block_text(&h, block));
    ensure!(plugin.is_running(), "loom-bridge exited: {:?}", plugin.exit_status());
    Ok(())
}

scenario_tests! {
    bridge_fastpath_docker26: "brfast" => fastpath_scenario,
}
