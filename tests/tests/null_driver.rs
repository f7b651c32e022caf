//! loom-null against real dockerd (20.10 and 26): a network created with `-d loom-null` gives
//! containers nothing but a loopback interface, like Docker's built-in `none` network, and
//! docker never adds a docker_gwbridge leg.
//!
//! Docker 20.10 starts the plugin before dockerd (the systemd `Before=docker.service` order);
//! Docker 26 starts it after dockerd. Needs `cargo build --release --workspace --bins` first.

use anyhow::{ensure, Context, Result};
use netloom_tests::{own_netns, scenario, Cluster, DockerVersion, Host, HostConfig, RootNsSnapshot, IMAGE};

/// Interface names from `ip -o link` output ("1: lo: <...>", "5: eth0@if6: <...>").
fn link_names(out: &str) -> Vec<String> {
    out.lines().filter_map(|l| l.split(": ").nth(1)).map(|n| n.split('@').next().unwrap_or(n).to_owned()).collect()
}

fn no_gwbridge(h: &Host, container_links: &[String]) -> Result<()> {
    ensure!(
        !container_links.iter().any(|n| n.contains("gwbridge")),
        "container has a gwbridge leg: {container_links:?}"
    );
    let nets = h.docker(&["network", "ls", "--format", "{{.Name}}"])?;
    ensure!(!nets.lines().any(|n| n == "docker_gwbridge"), "docker created docker_gwbridge: {nets}");
    let host_links = link_names(&h.exec(&["ip", "-o", "link"])?);
    ensure!(!host_links.iter().any(|n| n == "docker_gwbridge"), "host has docker_gwbridge: {host_links:?}");
    Ok(())
}

fn null_network(c: &Cluster, docker: DockerVersion, plugin_first: bool) -> Result<()> {
    let cfg = HostConfig::new("h1", docker);
    let h = if plugin_first {
        let h = c.add_host(cfg.defer_docker())?;
        h.start_plugin("loom-null", &["--log-level", "debug"])?;
        h.start_docker()?;
        h
    } else {
        let h = c.add_host(cfg)?;
        h.start_plugin("loom-null", &["--log-level", "debug"])?;
        h
    };
    let plugin = &h.plugins()[0];

    h.docker(&["network", "create", "-d", "loom-null", "nn"]).context("network create")?;
    let driver = h.docker(&["network", "inspect", "--format", "{{.Driver}}", "nn"])?;
    ensure!(driver.trim() == "loom-null", "network nn has driver {driver:?}");

    // A one-shot container: only lo.
    let out = h.docker(&["run", "--rm", "--network", "nn", IMAGE, "ip", "-o", "link"]).context("docker run on nn")?;
    let links = link_names(&out);
    ensure!(links == ["lo"], "container on nn has interfaces {links:?}, want only lo:\n{out}");
    no_gwbridge(&h, &links)?;

    // A long-running one, inspected from outside and from inside.
    h.docker(&["run", "-d", "--name", "c1", "--network", "nn", IMAGE, "sleep", "600"])?;
    let links = link_names(&h.container_exec("c1", &["ip", "-o", "link"])?);
    ensure!(links == ["lo"], "c1 has interfaces {links:?}");
    let addrs = h.container_exec("c1", &["ip", "-o", "addr"])?;
    ensure!(addrs.lines().all(|l| l.contains(" lo ")), "c1 has addresses beyond lo:\n{addrs}");
    let nets =
        h.docker(&["inspect", "--format", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}", "c1"])?;
    ensure!(nets.split_whitespace().collect::<Vec<_>>() == ["nn"], "c1 is attached to {nets:?}");
    no_gwbridge(&h, &links)?;
    h.docker(&["rm", "-f", "c1"])?;

    h.docker(&["network", "rm", "nn"]).context("network rm")?;
    let nets = h.docker(&["network", "ls", "--format", "{{.Name}}"])?;
    ensure!(!nets.lines().any(|n| n == "nn"), "nn still listed: {nets}");
    ensure!(plugin.is_running(), "loom-null exited: {:?}", plugin.exit_status());
    Ok(())
}

fn run(name: &str, docker: DockerVersion, plugin_first: bool) {
    let root = RootNsSnapshot::take().expect("root namespace snapshot");
    scenario(name, |c| null_network(c, docker, plugin_first));
    let left: Vec<_> = own_netns()
        .into_iter()
        .filter(|n| n.ends_with(&format!("-{name}")) || n.contains(&format!("-{name}-")))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    root.check_unchanged().expect("root namespace untouched");
}

#[test]
fn null_driver_docker20() {
    run("null20", DockerVersion::V20, true);
}

#[test]
fn null_driver_docker26() {
    run("null26", DockerVersion::V26, false);
}

/// The plugin handle's lifecycle against loom-null: SIGKILL (a crash, leaving its socket file
/// behind), restart, SIGTERM; the network created before keeps working across plugin restarts
/// (the driver must persist it: dockerd never replays CreateNetwork).
#[test]
fn null_driver_survives_plugin_restarts() {
    scenario("nullrst", |c| {
        let h = c.add_host(HostConfig::new("h1", DockerVersion::V20))?;
        let p = h.start_plugin("loom-null", &[])?;
        h.docker(&["network", "create", "-d", "loom-null", "nn"])?;
        let pid1 = p.pid().context("not running")?;

        let st = p.sigkill()?;
        ensure!(!p.is_running() && !st.success(), "after SIGKILL: {st}");
        p.restart()?;
        ensure!(p.pid().is_some_and(|pid| pid != pid1), "restart gave no new process");
        let out = h
            .docker(&["run", "--rm", "--network", "nn", IMAGE, "ip", "-o", "link"])
            .context("run after crash + restart")?;
        ensure!(link_names(&out) == ["lo"], "{out}");

        let st = p.sigterm()?;
        ensure!(st.success(), "loom-null exit status after SIGTERM: {st}");
        p.restart()?;
        h.docker(&["run", "--rm", "--network", "nn", IMAGE, "true"]).context("run after graceful restart")?;
        h.docker(&["network", "rm", "nn"])?;
        Ok(())
    });
}
