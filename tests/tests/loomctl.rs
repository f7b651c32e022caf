//! `loomctl` against real drivers under Docker 26: `status --json` names a loom-bridge network by
//! its Docker name with its endpoint count as containers come and go, the tables and `inspect`
//! show its bridge and the containers' addresses (and loom-host's routes, loom-macvlan's parent),
//! and `doctor` passes on a good host and fails, naming the store, once the store of loom-ipam
//! stops answering.

use anyhow::{bail, ensure, Context, Result};
use netloom_tests::{bin_dir, scenario, Cluster, DockerVersion, Etcd, Host, HostConfig, IMAGE};
use serde_json::Value;

/// `loomctl ARGS` on the host, asking its dockerd; stdout and the exit code.
fn loomctl(h: &Host, args: &str) -> Result<(String, i32)> {
    let binary = bin_dir().join("loomctl");
    if !binary.is_file() {
        bail!("{} is missing: run `cargo build --release -p loomctl` first", binary.display());
    }
    let docker = format!("unix://{}", h.docker_socket().display());
    let out = h.sh(&format!("{} --docker-host {docker} {args} 2>&1; echo \"exit=$?\"", binary.display()))?;
    let (text, code) = out.trim_end().rsplit_once("exit=").context("no exit status")?;
    Ok((text.to_string(), code.trim().parse()?))
}

fn status_json(h: &Host) -> Result<Value> {
    let (text, code) = loomctl(h, "status --json")?;
    ensure!(code == 0, "loomctl status --json exited {code}: {text}");
    serde_json::from_str(&text).with_context(|| format!("loomctl status --json printed no JSON: {text}"))
}

/// The driver `name` of a `status --json`.
fn driver<'a>(status: &'a Value, name: &str) -> Result<&'a Value> {
    let drivers = status["drivers"].as_array().context("no drivers list")?;
    drivers.iter().find(|d| d["name"] == name).with_context(|| format!("{name} is not in {status}"))
}

/// The network called `name` by Docker in a driver's `networks`.
fn network<'a>(driver: &'a Value, name: &str) -> Result<&'a Value> {
    let networks = driver["networks"].as_array().context("no networks list")?;
    networks.iter().find(|n| n["name"] == name).with_context(|| format!("no network named {name} in {driver}"))
}

fn loomctl_scenario(c: &Cluster) -> Result<()> {
    let h = c.add_host(HostConfig::new("h1", DockerVersion::V26))?;
    let mut etcd = Etcd::on_hosts(c, std::slice::from_ref(&h))?;
    h.start_plugin("loom-bridge", &[])?;
    h.start_plugin("loom-ipam", &["--store", &etcd.url()])?;

    let id = h.network_create("loom-bridge", "web", &["--subnet", "10.68.0.0/24"])?.trim().to_string();
    for name in ["w1", "w2"] {
        h.docker(&["run", "-d", "--name", name, "--network", "web", IMAGE, "sleep", "600"])?;
    }
    let status = status_json(&h)?;
    let bridge = driver(&status, "loom-bridge")?;
    ensure!(bridge["up"] == true && bridge["version"].is_string(), "loom-bridge: {bridge}");
    let web = network(bridge, "web")?;
    ensure!(web["id"] == id.as_str(), "web's id: {web}");
    ensure!(web["endpoints"] == 2, "web after two docker run: {web}");
    ensure!(web["subnets"] == serde_json::json!(["10.68.0.0/24"]), "web's subnets: {web}");
    let ipam = driver(&status, "loom-ipam")?;
    ensure!(ipam["store"]["healthy"] == true, "loom-ipam's store: {ipam}");
    ensure!(ipam["store"]["url"] == etcd.url().as_str(), "loom-ipam's store URL: {ipam}");

    h.docker(&["rm", "-f", "w2"])?;
    let status = status_json(&h)?;
    let web = network(driver(&status, "loom-bridge")?, "web")?;
    ensure!(web["endpoints"] == 1, "web after one docker rm: {web}");

    let bridge_name = h.docker(&["network", "inspect", "--format", "{{.Id}}", "web"])?;
    ensure!(bridge_name.trim() == id, "docker and loomctl disagree on web's id");
    let (table, code) = loomctl(&h, "status")?;
    ensure!(code == 0, "loomctl status exited {code}: {table}");
    let bridge_line = table.lines().find(|l| l.contains("web")).with_context(|| format!("web not in:\n{table}"))?;
    ensure!(bridge_line.contains("10.68.0.0/24") && bridge_line.contains("bridge loom"), "web's row: {bridge_line}");
    ensure!(table.contains("loom-bridge  up"), "loom-bridge not up in:\n{table}");

    let w1_ip = h.container_ip("w1", "web")?;
    let (inspected, code) = loomctl(&h, "inspect web")?;
    ensure!(code == 0, "loomctl inspect web exited {code}: {inspected}");
    let inspected: Value = serde_json::from_str(&inspected).context("inspect printed no JSON")?;
    let bridge_link = inspected["held"]["bridge"]["name"].as_str().unwrap_or_default();
    ensure!(bridge_link.starts_with("loom"), "no bridge link in {inspected}");
    ensure!(inspected["held"]["firewall"]["rules_installed"] == true, "web's rules: {inspected}");
    let addresses: Vec<&str> = inspected["held"]["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["record"]["address_v4"].as_str())
        .collect();
    ensure!(addresses.iter().any(|a| a.starts_with(&format!("{w1_ip}/"))), "w1's {w1_ip} not in {addresses:?}");
    ensure!(inspected["docker"]["containers"][0]["name"] == "w1", "Docker's view: {inspected}");
    eprintln!("[loomctl] status:\n{table}");

    // loom-host: the kernel's route to the container; loom-macvlan: the network's parent.
    h.start_plugin("loom-host", &[])?;
    h.start_plugin("loom-macvlan", &[])?;
    h.network_create("loom-host", "routed", &["--subnet", "10.69.0.0/24"])?;
    h.network_create("loom-macvlan", "segment", &["--internal", "--subnet", "10.70.0.0/24"])?;
    h.docker(&["run", "-d", "--name", "r1", "--network", "routed", IMAGE, "sleep", "600"])?;
    h.docker(&["run", "-d", "--name", "s1", "--network", "segment", IMAGE, "sleep", "600"])?;
    let r1_ip = h.container_ip("r1", "routed")?;
    let (routed, code) = loomctl(&h, "inspect routed")?;
    ensure!(code == 0, "loomctl inspect routed exited {code}: {routed}");
    let routed: Value = serde_json::from_str(&routed).context("inspect printed no JSON")?;
    let routes = &routed["held"]["endpoints"][0]["routes"];
    ensure!(routes.as_array().is_some_and(|r| r.contains(&format!("{r1_ip}/32").into())), "r1's route: {routed}");
    let (segment, code) = loomctl(&h, "inspect segment")?;
    ensure!(code == 0, "loomctl inspect segment exited {code}: {segment}");
    let segment: Value = serde_json::from_str(&segment).context("inspect printed no JSON")?;
    ensure!(segment["held"]["parent"]["present"] == true, "segment's parent: {segment}");
    let status = status_json(&h)?;
    let segment = network(driver(&status, "loom-macvlan")?, "segment")?;
    ensure!(segment["subnets"] == serde_json::json!(["10.70.0.0/24"]) && segment["endpoints"] == 1, "{segment}");
    h.docker(&["rm", "-f", "r1", "s1"])?;
    h.docker(&["network", "rm", "routed", "segment"])?;

    // The doctor passes with the store up, and fails naming loom-ipam's store once it is down.
    let (report, code) = loomctl(&h, "doctor")?;
    ensure!(code == 0, "doctor on a good host exited {code}:\n{report}");
    ensure!(report.contains("ok    loom-ipam: store etcd://"), "no store check in:\n{report}");
    etcd.stop(0)?;
    let (report, code) = loomctl(&h, "doctor")?;
    ensure!(code != 0, "doctor exited 0 with the store down:\n{report}");
    let failure = report.lines().find(|l| l.starts_with("FAIL")).with_context(|| format!("no FAIL in:\n{report}"))?;
    ensure!(failure.contains("loom-ipam: store etcd://"), "the failure does not name the store: {failure}");
    ensure!(report.contains("fix: start the store"), "no fix hint in:\n{report}");
    eprintln!("[loomctl] doctor with the store down:\n{report}");

    h.docker(&["rm", "-f", "w1"])?;
    h.docker(&["network", "rm", "web"])?;
    h.plugins_still_running()
}

#[test]
fn loomctl_status_inspect_doctor_docker26() {
    scenario("loomctl", loomctl_scenario);
}
