//! Claims in the shared store have holders: on two Docker 26 hosts over one etcd, with loom-ipam
//! and loom-overlay (local scope), an address one host's container holds cannot be taken or
//! released by the other host; with Docker's default IPAM two hosts handing out the same address
//! are told to use loom-ipam; a network record planted under this host's key while its driver was
//! down is joined only when it is the same network. Each check first shows the thing working.
//! Needs `cargo build --release --workspace --bins`.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use netloom_plugin_api::client::PluginClient;
use netloom_tests::{
    ping, scenario, wait_until, Cluster, DockerVersion, Host, HostConfig, LocalOverlay, UnderlayEtcd, IMAGE,
};
use serde_json::json;

fn step(t0: Instant, what: &str) {
    eprintln!("[ownership] {:6.2}s {what}", t0.elapsed().as_secs_f64());
}

fn sleeper(h: &Host, name: &str, network: &str, extra: &[&str]) -> Result<String> {
    let mut argv = vec!["run", "-d", "--name", name, "--network", network];
    argv.extend_from_slice(extra);
    argv.extend_from_slice(&[IMAGE, "sleep", "3600"]);
    h.docker(&argv)
}

/// `docker run` that must fail with an error saying `want`; no container is left running.
fn run_refused(h: &Host, name: &str, network: &str, extra: &[&str], want: &str) -> Result<()> {
    let err = match sleeper(h, name, network, extra) {
        Ok(_) => bail!("`docker run {extra:?}` on {} was accepted", h.name()),
        Err(e) => format!("{e:#}"),
    };
    ensure!(err.contains(want), "`docker run {extra:?}` on {}: the error does not say {want:?}:\n{err}", h.name());
    eprintln!("[ownership] refused as expected: {}", err.lines().find(|l| l.contains(want)).unwrap_or_default());
    let _ = h.docker(&["rm", "-f", name]);
    Ok(())
}

fn etcdctl(c: &Cluster, args: &[&str]) -> Result<String> {
    let endpoint = UnderlayEtcd::endpoint(c, 0);
    let mut argv = vec!["etcdctl", "--endpoints", endpoint.as_str()];
    argv.extend_from_slice(args);
    c.underlay_exec(&argv)
}

fn network_record(c: &Cluster, key: &str) -> Result<serde_json::Value> {
    let out = etcdctl(c, &["get", "--print-value-only", &format!("/netloom/v1/overlay/networks/{key}")])?;
    if out.trim().is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_str(out.trim()).with_context(|| format!("record {key}: {out:?}"))
}

fn members(record: &serde_json::Value) -> Vec<String> {
    record["members"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default()
}

fn ownership_scenario(c: &Cluster) -> Result<()> {
    let t0 = Instant::now();
    let etcd = UnderlayEtcd::start(c, 1)?;
    let store = etcd.url(c);
    let hosts =
        c.add_hosts(vec![HostConfig::new("h1", DockerVersion::V26), HostConfig::new("h2", DockerVersion::V26)])?;
    let (h1, h2) = (&hosts[0], &hosts[1]);
    for h in [h1, h2] {
        LocalOverlay::new(&store).overlay_args(&["--reconcile-interval", "1"]).start(h)?;
    }
    step(t0, "hosts up");

    // ---- an address held on h1 is h1's ----
    for h in [h1, h2] {
        h.network_create("loom-overlay", "own", &["--ipam-driver", "loom-ipam", "--subnet", "10.88.0.0/24"])?;
    }
    sleeper(h1, "a1", "own", &["--ip", "10.88.0.10"])?;
    sleeper(h2, "b1", "own", &["--ip", "10.88.0.11"])?;
    ping(h2, "b1", "10.88.0.10").context("the overlay works across hosts")?;
    run_refused(h2, "b2", "own", &["--ip", "10.88.0.10"], "address 10.88.0.10 is already in use")?;
    ensure!(h1.container_ip("a1", "own")? == "10.88.0.10", "a1 lost its address");
    ping(h2, "b1", "10.88.0.10").context("a1 still answers at its address")?;
    step(t0, "docker run --ip of an address held on another host refused");

    let ipam_b = h2.plugins().into_iter().find(|p| p.name() == "loom-ipam").context("no loom-ipam on h2")?;
    let socket = h2.path_inside(&ipam_b.socket());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut client = PluginClient::connect(&socket).await?;
        let pool = "LocalDefault/10.88.0.0/24";
        // It works: h2 takes and releases an address of its own.
        let got = client
            .call("IpamDriver.RequestAddress", &json!({"PoolID": pool, "Address": "10.88.0.50", "Options": {}}))
            .await?;
        ensure!(got["Address"] == "10.88.0.50/24", "RequestAddress answered {got}");
        client.call("IpamDriver.ReleaseAddress", &json!({"PoolID": pool, "Address": "10.88.0.50"})).await?;
        // h1's address, released through h2's loom-ipam: refused.
        let reply = client
            .call_raw(
                "IpamDriver.ReleaseAddress",
                serde_json::to_vec(&json!({"PoolID": pool, "Address": "10.88.0.10"}))?,
            )
            .await?;
        let err = reply.err().unwrap_or_default().to_string();
        ensure!(reply.status != 200, "a non-owner ReleaseAddress was accepted: {reply:?}");
        ensure!(err.contains("only the host that holds an address can release it"), "unclear refusal: {err}");
        eprintln!("[ownership] refused as expected: {err}");
        anyhow::Ok(())
    })?;
    run_refused(h2, "b3", "own", &["--ip", "10.88.0.10"], "address 10.88.0.10 is already in use")?;
    ping(h2, "b1", "10.88.0.10").context("a1 still answers after the refused release")?;
    step(t0, "a non-owner ReleaseAddress refused; the address stays held");

    // ---- Docker's default IPAM hands out .2 on both hosts ----
    for h in [h1, h2] {
        h.network_create("loom-overlay", "dflt", &["--subnet", "10.89.0.0/24"])?;
    }
    sleeper(h1, "d1", "dflt", &[])?;
    let d1 = h1.container_ip("d1", "dflt")?;
    ensure!(d1 == "10.89.0.2", "d1 got {d1}");
    sleeper(h2, "d2", "dflt", &["--ip", "10.89.0.3"])?;
    ping(h2, "d2", &d1).context("distinct addresses work with Docker's IPAM")?;
    run_refused(h2, "d3", "dflt", &[], "--ipam-driver loom-ipam")?;
    ping(h2, "d2", &d1).context("d1 keeps its address")?;
    step(t0, "the second host's .2 refused with the --ipam-driver loom-ipam hint");

    // ---- a restored record is joined only if it is this host's network ----
    let vni = "com.docker.network.driver.overlay.vxlanid_list=5300";
    h1.network_create("loom-overlay", "lone", &["--ipam-driver", "loom-ipam", "--subnet", "10.87.0.0/24", "-o", vni])?;
    let record = network_record(c, "vni-5300")?;
    ensure!(members(&record).len() == 1, "vni-5300: {record}");
    let overlay = h1.plugins().into_iter().find(|p| p.name() == "loom-overlay").context("no loom-overlay on h1")?;
    let key = "/netloom/v1/overlay/networks/vni-5300";
    // It works: a record deleted while the driver was down is written back.
    overlay.sigterm()?;
    etcdctl(c, &["del", key])?;
    overlay.start()?;
    wait_until(Duration::from_secs(20), Duration::from_millis(200), "the record to be written back", || {
        Ok(members(&network_record(c, "vni-5300")?) == members(&record))
    })?;
    // Another network under the same key (the key freed and reused while h1 was down, or a
    // record rewritten behind its back): not joined, whether the subnet or the VNI differs.
    let planted: [(&str, &str, serde_json::Value); 2] =
        [("another subnet", "subnet_v4", json!("10.86.0.0/24")), ("another VNI", "vni", json!(5301))];
    for (what, field, value) in planted {
        overlay.sigterm()?;
        let mut foreign = record.clone();
        foreign[field] = value.clone();
        foreign["members"] = json!({"elsewhere": "0123456789ab"});
        etcdctl(c, &["put", key, &foreign.to_string()])?;
        let log = overlay.log_path().to_path_buf();
        let refusals_before = std::fs::read_to_string(&log)?.matches("is another network now").count();
        overlay.start()?;
        wait_until(Duration::from_secs(20), Duration::from_millis(200), "the refusal in h1's log", || {
            Ok(std::fs::read_to_string(&log)?.matches("is another network now").count() > refusals_before)
        })?;
        let now = network_record(c, "vni-5300")?;
        ensure!(members(&now) == vec!["elsewhere".to_string()], "{what}: h1 joined the foreign record: {now}");
        ensure!(now[field] == value, "{what}: the foreign record was rewritten: {now}");
        step(t0, &format!("a planted record with {what} not joined"));
    }
    etcdctl(c, &["del", key])?;

    h1.docker(&["rm", "-f", "a1", "d1"])?;
    h2.docker(&["rm", "-f", "b1", "d2"])?;
    h1.docker(&["network", "rm", "own", "dflt", "lone"])?;
    h2.docker(&["network", "rm", "own", "dflt"])?;
    h1.plugins_still_running()?;
    h2.plugins_still_running()?;
    step(t0, "removed");
    Ok(())
}

#[test]
fn store_ownership_docker26() {
    scenario("ownership", ownership_scenario);
}
