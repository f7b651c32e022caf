//! loom-ipam against real dockerd and real etcd: explicit and default pools, static addresses,
//! exhaustion, release and reuse, a crash of the driver, two hosts sharing one pool, and etcd
//! members going away.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use netloom_plugin_api::client::PluginClient;
use netloom_tests::{scenario, scenario_tests, Cluster, DockerVersion, Etcd, Host, HostConfig, IMAGE};
use serde_json::{json, Value};

fn start_ipam(h: &Host, store: &str) -> Result<Arc<netloom_tests::Plugin>> {
    h.start_plugin("loom-ipam", &["--store", store, "--log-level", "debug"])
}

/// `docker run -d` of a container sleeping for `seconds`.
fn run(h: &Host, name: &str, network: &str, extra: &[&str], seconds: &str) -> Result<String> {
    let mut argv = vec!["run", "-d", "--name", name, "--network", network];
    argv.extend_from_slice(extra);
    argv.extend_from_slice(&[IMAGE, "sleep", seconds]);
    h.docker(&argv)
}

/// Runs a container and returns its address on `network`.
fn run_on(h: &Host, name: &str, network: &str, extra: &[&str]) -> Result<String> {
    run(h, name, network, extra, "600")?;
    h.container_ip(name, network)
}

/// Runs a container that should not get an address: the error, or None (the container started;
/// it is removed either way).
fn run_refused(h: &Host, name: &str, network: &str, extra: &[&str]) -> Option<anyhow::Error> {
    let err = run(h, name, network, extra, "1").err();
    let _ = h.docker(&["rm", "-f", name]);
    err
}

/// `docker network create` of a loom-null network with loom-ipam addresses.
fn create_network(h: &Host, name: &str, extra: &[&str]) -> Result<String> {
    h.network_create("loom-null", name, &[&["--ipam-driver", "loom-ipam"][..], extra].concat())
}

fn remove_all_containers(h: &Host) -> Result<()> {
    let containers: Vec<String> = h.docker(&["ps", "-aq"])?.lines().map(String::from).collect();
    h.docker(&[&["rm", "-f"][..], &containers.iter().map(String::as_str).collect::<Vec<_>>()].concat())?;
    Ok(())
}

fn subnet_of(h: &Host, network: &str) -> Result<String> {
    Ok(h.docker(&["network", "inspect", "--format", "{{(index .IPAM.Config 0).Subnet}}", network])?.trim().to_string())
}

fn docker_scenario(c: &Cluster, docker: DockerVersion) -> Result<()> {
    let hosts = c.add_hosts(vec![HostConfig::new("h1", docker), HostConfig::new("h2", docker)])?;
    let (h1, h2) = (&hosts[0], &hosts[1]);
    let etcd = Etcd::on_hosts(c, &hosts[..1])?;
    let ipam1 = start_ipam(h1, &etcd.url())?;
    start_ipam(h2, &etcd.url())?;
    for h in [h1, h2] {
        h.start_plugin("loom-null", &[])?;
    }

    // An explicit pool with a sub-range and a gateway; the same subnet on the second host is the same pool.
    let n1 = ["--subnet", "10.40.0.0/24", "--ip-range", "10.40.0.128/25", "--gateway", "10.40.0.1"];
    create_network(h1, "n1", &n1).context("network create on h1")?;
    create_network(h2, "n1", &n1).context("the same network on h2")?;
    let gateway = h2.docker(&["network", "inspect", "--format", "{{(index .IPAM.Config 0).Gateway}}", "n1"])?;
    ensure!(gateway.trim() == "10.40.0.1", "gateway on h2: {gateway}");

    let fixed = run_on(h1, "c1", "n1", &["--ip", "10.40.0.200"])?;
    ensure!(fixed == "10.40.0.200", "--ip gave {fixed}");
    let mut seen = BTreeSet::from([fixed]);
    for (h, name) in [(h1, "c2"), (h2, "c3"), (h2, "c4"), (h1, "c5")] {
        let ip = run_on(h, name, "n1", &[])?;
        let last: u8 = ip.rsplit('.').next().and_then(|o| o.parse().ok()).context("bad address")?;
        ensure!(ip.starts_with("10.40.0.") && last >= 128, "{name} got {ip}, outside --ip-range");
        ensure!(seen.insert(ip.clone()), "{ip} handed out twice");
    }
    let err = run_refused(h2, "dup", "n1", &["--ip", "10.40.0.200"]);
    ensure!(err.is_some(), "10.40.0.200 was handed out twice, across hosts");

    // Default pools never overlap each other or a pool in use.
    create_network(h1, "d1", &[])?;
    create_network(h1, "d2", &[])?;
    let (d1, d2) = (subnet_of(h1, "d1")?, subnet_of(h1, "d2")?);
    ensure!(d1 != d2 && !d1.is_empty(), "default pools {d1} and {d2}");

    // Exhaustion: a /29 has 8 addresses, less network, broadcast and gateway.
    create_network(h1, "small", &["--subnet", "10.41.0.0/29"])?;
    for i in 0..5 {
        run_on(h1, &format!("s{i}"), "small", &[])?;
    }
    let err = run_refused(h1, "s5", "small", &[]).context("a sixth address in a /29")?;
    ensure!(format!("{err:#}").contains("pool 10.41.0.0/29 is exhausted"), "exhaustion error: {err:#}");

    // Release and reuse.
    let freed = h1.container_ip("s2", "small")?;
    h1.docker(&["rm", "-f", "s2"])?;
    let again = run_on(h1, "s6", "small", &[])?;
    ensure!(again == freed, "released {freed}, then got {again}");

    // A crash of loom-ipam loses nothing: the pool is still full and no address repeats.
    ipam1.sigkill()?;
    ipam1.restart()?;
    let err = run_refused(h1, "s7", "small", &[]);
    ensure!(err.is_some(), "the /29 had free addresses after the restart");
    let after = run_on(h1, "c6", "n1", &[])?;
    ensure!(seen.insert(after.clone()), "{after} handed out again after the restart");

    // Removal gives everything back.
    for h in [h1, h2] {
        remove_all_containers(h)?;
    }
    for net in ["n1", "d1", "d2", "small"] {
        h1.docker(&["network", "rm", net]).with_context(|| format!("removing {net}"))?;
    }
    h2.docker(&["network", "rm", "n1"])?;
    create_network(h1, "small", &["--subnet", "10.41.0.0/29"]).context("the /29 was not released")?;
    Ok(())
}

scenario_tests! {
    ipam_docker20: "ipam20" => |c| docker_scenario(c, DockerVersion::V20),
    ipam_docker26: "ipam26" => |c| docker_scenario(c, DockerVersion::V26),
}

async fn request_pool(client: &mut PluginClient, subnet: &str) -> Result<String> {
    let reply = client
        .call(
            "IpamDriver.RequestPool",
            &json!({"AddressSpace": "GlobalDefault", "Pool": subnet, "SubPool": "", "Options": {}, "V6": false}),
        )
        .await?;
    Ok(reply["PoolID"].as_str().context("no PoolID")?.to_string())
}

async fn request_addresses(socket: std::path::PathBuf, pool: String, count: usize) -> Result<Vec<String>> {
    let mut client = PluginClient::connect(&socket).await?;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let reply =
            client.call("IpamDriver.RequestAddress", &json!({"PoolID": pool, "Address": "", "Options": {}})).await?;
        out.push(reply["Address"].as_str().context("no Address")?.to_string());
    }
    Ok(out)
}

/// Hosts h1, h2, … on which the scenario talks to loom-ipam's socket, without dockerd.
fn hosts_without_docker(c: &Cluster, count: usize) -> Result<Vec<Arc<Host>>> {
    c.add_hosts((1..=count).map(|i| HostConfig::new(&format!("h{i}"), DockerVersion::V20).defer_docker()).collect())
}

/// Two hosts, one etcd, 1000 addresses requested at once from one pool: 1000 distinct addresses.
#[test]
fn ipam_two_hosts_never_share_an_address() {
    scenario("ipamrace", |c| {
        let hosts = hosts_without_docker(c, 2)?;
        let etcd = Etcd::on_hosts(c, &hosts[..1])?;
        let sockets: Vec<_> =
            hosts.iter().map(|h| Ok(h.path_inside(&start_ipam(h, &etcd.url())?.socket()))).collect::<Result<_>>()?;
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build()?;
        runtime.block_on(async {
            let mut pools = Vec::new();
            for socket in &sockets {
                pools.push(request_pool(&mut PluginClient::connect(socket).await?, "10.60.0.0/20").await?);
            }
            ensure!(pools[0] == pools[1], "the same subnet gave pools {pools:?}");
            let mut tasks = Vec::new();
            for socket in &sockets {
                for _ in 0..2 {
                    tasks.push(tokio::spawn(request_addresses(socket.clone(), pools[0].clone(), 250)));
                }
            }
            let mut all = BTreeSet::new();
            let mut total = 0;
            for task in tasks {
                for address in task.await?? {
                    total += 1;
                    all.insert(address);
                }
            }
            ensure!(total == 1000 && all.len() == 1000, "{total} addresses handed out, {} distinct", all.len());
            anyhow::Ok(())
        })
    });
}

/// A 3-member etcd, one member per host: losing one member changes nothing, losing all of them
/// gives a clear error within seconds, and everything works again when they return.
#[test]
fn ipam_survives_etcd_members_going_away() {
    scenario("ipametcd", |c| {
        let hosts = hosts_without_docker(c, 3)?;
        let mut etcd = Etcd::on_hosts(c, &hosts)?;
        let plugin = start_ipam(&hosts[0], &etcd.url())?;
        let socket = hosts[0].path_inside(&plugin.socket());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async {
            let mut client = PluginClient::connect(&socket).await?;
            let pool = request_pool(&mut client, "10.61.0.0/24").await?;
            let request = json!({"PoolID": pool, "Address": "", "Options": {}});
            client.call("IpamDriver.RequestAddress", &request).await?;

            etcd.stop(2)?;
            // If the stopped member led the cluster, a write in flight fails until the other two
            // elect a new leader (well under a second here); after that allocations go on.
            let mut elected = false;
            for _ in 0..20 {
                if client.call("IpamDriver.RequestAddress", &request).await.is_ok() {
                    elected = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            ensure!(elected, "no allocation succeeded within 5 s of losing one etcd member of three");
            for _ in 0..5 {
                client.call("IpamDriver.RequestAddress", &request).await.context("with one etcd member down")?;
            }

            etcd.stop(0)?;
            etcd.stop(1)?;
            let started = Instant::now();
            let reply = client.call_raw("IpamDriver.RequestAddress", serde_json::to_vec(&request)?).await?;
            let waited = started.elapsed();
            ensure!(reply.status == 500, "a request with etcd down answered {reply:?}");
            let err = reply.err().unwrap_or_default().to_string();
            ensure!(err.contains("etcd") && err.contains("unavailable"), "unclear error with etcd down: {err}");
            ensure!(waited < Duration::from_secs(10), "the error took {waited:?}");

            for i in 0..3 {
                etcd.start(i)?;
            }
            etcd.wait_healthy(0, Duration::from_secs(30))?;
            let mut last = Value::Null;
            for _ in 0..50 {
                match client.call("IpamDriver.RequestAddress", &request).await {
                    Ok(reply) => {
                        last = reply;
                        break;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
            if last.is_null() {
                bail!("loom-ipam did not recover after etcd came back");
            }
            anyhow::Ok(())
        })
    });
}
