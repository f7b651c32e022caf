//! loom-ipam reconciled against a real dockerd (20.10 and 26): pools and addresses of networks and
//! containers Docker forgot without loom-ipam hearing of it are released, within one reconcile
//! period by a loom-ipam that stayed up and at start by one that was down; what Docker still has
//! is kept (a default pool, a gateway and an auxiliary address no endpoint has); nothing is
//! released while dockerd is stopped. Docker forgets on purpose: a
//! `PluginProxy` between dockerd and loom-ipam answers ReleaseAddress and ReleasePool itself.
//! Needs `cargo build --release --workspace --bins`.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use netloom_tests::{
    embedded_store_keys, scenario_tests, wait_until, Cluster, DockerVersion, Host, HostConfig, Plugin, PluginProxy,
    UnderlayEtcd, FAST_RECONCILE, IMAGE,
};
use serde_json::json;

/// The requests by which dockerd tells an IPAM driver that something is gone.
const RELEASES: [&str; 2] = ["IpamDriver.ReleaseAddress", "IpamDriver.ReleasePool"];
/// Beyond one reconcile period: a pass that started just before, a slow store copy.
const SLACK: Duration = Duration::from_secs(4);

fn step(t0: Instant, what: &str) {
    eprintln!("[ipam-reconcile] {:6.2}s {what}", t0.elapsed().as_secs_f64());
}

/// A loom-null network with loom-ipam addresses and one container on it.
struct Net {
    name: String,
    container: String,
    /// The pool's subnet as store keys spell it, e.g. `10.71.0.0_24`.
    subnet_key: String,
    /// The container's address.
    address: String,
}

impl Net {
    /// `args`: `docker network create` options (`--subnet`, ...; none for a default pool).
    fn create(h: &Host, name: &str, args: &[&str]) -> Result<Net> {
        h.network_create("loom-null", name, &[&["--ipam-driver", "loom-ipam"], args].concat())
            .with_context(|| format!("creating {name}"))?;
        let format = "{{(index .IPAM.Config 0).Subnet}}";
        let subnet = h.docker(&["network", "inspect", "--format", format, name])?.trim().to_string();
        ensure!(subnet.contains('/'), "network {name} shows no subnet: {subnet:?}");
        let container = format!("{name}-c");
        h.docker(&["run", "-d", "--name", &container, "--network", name, IMAGE, "sleep", "600"])
            .with_context(|| format!("starting {container}"))?;
        let address = h.container_ip(&container, name)?;
        Ok(Net { name: name.into(), container, subnet_key: subnet.replace('/', "_"), address })
    }

    fn key_of(&self, ip: &str) -> String {
        format!("ipam/addrs/LocalDefault/{}/ips/{ip}", self.subnet_key)
    }

    fn pool_key(&self) -> String {
        format!("ipam/pools/LocalDefault/{}", self.subnet_key)
    }

    fn address_key(&self) -> String {
        self.key_of(&self.address)
    }

    /// loom-ipam's store keys of this network's pool (its record, address bitmap and owners).
    fn keys(&self, ipam: &Plugin) -> Result<Vec<String>> {
        let needle = format!("/{}", self.subnet_key);
        Ok(embedded_store_keys(ipam)?.into_iter().filter(|k| k.contains(&needle)).collect())
    }

    /// The pool and the container's address are in loom-ipam's store.
    fn ensure_held(&self, ipam: &Plugin, when: &str) -> Result<()> {
        let keys = self.keys(ipam)?;
        for key in [self.pool_key(), self.address_key()] {
            ensure!(keys.contains(&key), "{when}: {key} is not in loom-ipam's store: {keys:?}");
        }
        Ok(())
    }

    /// Waits until the pool and everything in it are gone from loom-ipam's store, released by
    /// reconciliation (which says so in loom-ipam's log, naming the pool and the address).
    fn wait_released(&self, ipam: &Plugin, limit: Duration) -> Result<()> {
        wait_until(limit, Duration::from_millis(250), &format!("loom-ipam to release {}'s pool", self.name), || {
            Ok(self.keys(ipam)?.is_empty())
        })?;
        let pool_id = format!("LocalDefault/{}", self.subnet_key.replace('_', "/"));
        let log = std::fs::read_to_string(ipam.log_path())?;
        let logged = |what: &str, detail: &str| log.lines().any(|l| l.contains(what) && l.contains(detail));
        ensure!(logged("pool released", &pool_id), "no log line says why pool {pool_id} was released");
        ensure!(logged("released", &self.address), "no log line says why address {} was released", self.address);
        Ok(())
    }

    /// Removes the container and the network through Docker while the proxy keeps the releases
    /// from loom-ipam, and checks that they were kept from it.
    fn forget(&self, h: &Host, proxy: &PluginProxy) -> Result<()> {
        proxy.swallow(&RELEASES);
        let before = proxy.swallowed("IpamDriver.ReleaseAddress").len();
        h.docker(&["rm", "-f", &self.container])?;
        h.docker(&["network", "rm", &self.name]).with_context(|| format!("removing {}", self.name))?;
        let addresses = proxy.swallowed("IpamDriver.ReleaseAddress");
        let kept_from_ipam = addresses[before..].iter().any(|r| r["Address"] == json!(self.address));
        ensure!(kept_from_ipam, "dockerd's release of {} did not go through the proxy: {addresses:?}", self.address);
        let pool = json!(format!("LocalDefault/{}", self.subnet_key.replace('_', "/")));
        ensure!(
            proxy.swallowed("IpamDriver.ReleasePool").iter().any(|r| r["PoolID"] == pool),
            "dockerd's ReleasePool of {pool} did not go through the proxy"
        );
        Ok(())
    }
}

/// A network with a container, held by loom-ipam, then removed through Docker while loom-ipam is
/// stopped (the proxy answers dockerd's releases; it goes on answering them until told otherwise).
fn forgotten_while_down(h: &Host, ipam: &Plugin, proxy: &PluginProxy, name: &str, subnet: &str) -> Result<Net> {
    let net = Net::create(h, name, &["--subnet", subnet])?;
    net.ensure_held(ipam, "after docker run")?;
    ipam.sigterm()?;
    net.forget(h, proxy)?;
    Ok(net)
}

fn docker_scenario(c: &Cluster, docker: DockerVersion) -> Result<()> {
    let t0 = Instant::now();
    let h = c.add_host(HostConfig::new("h1", docker))?;
    h.start_plugin("loom-null", &["--log-level", "debug"])?;
    let args = [&FAST_RECONCILE[..], &["--log-level", "debug"]].concat();
    let (ipam, proxy) = h.start_plugin_behind_proxy("loom-ipam", &args)?;
    let ipam = ipam.as_ref();
    let period = ipam.reconcile_period();

    // Kept throughout: a gateway and an auxiliary address that no endpoint has, and a default pool.
    let kept_args = ["--subnet", "10.70.0.0/24", "--ip-range", "10.70.0.128/25", "--gateway", "10.70.0.1"];
    let kept = Net::create(&h, "kept", &[&kept_args[..], &["--aux-address", "router=10.70.0.5"]].concat())?;
    let kept_keys = [kept.pool_key(), kept.key_of("10.70.0.1"), kept.key_of("10.70.0.5")];
    let auto = Net::create(&h, "auto", &[])?;
    let up = Net::create(&h, "up", &["--subnet", "10.71.0.0/24"])?;
    for net in [&kept, &auto, &up] {
        net.ensure_held(ipam, "after docker run")?;
    }
    let kept_intact = |when: &str| -> Result<()> {
        kept.ensure_held(ipam, when)?;
        auto.ensure_held(ipam, when)?;
        let keys = kept.keys(ipam)?;
        ensure!(kept_keys.iter().all(|k| keys.contains(k)), "{when}: kept's gateway or aux address is gone: {keys:?}");
        Ok(())
    };
    kept_intact("after docker run")?;
    step(t0, "three networks with a container each");

    // A loom-ipam that stays up releases what Docker forgot within one reconcile period.
    up.forget(&h, &proxy)?;
    up.ensure_held(ipam, "right after Docker forgot")?;
    let forgotten = Instant::now();
    proxy.forward_all();
    up.wait_released(ipam, period + SLACK)?;
    step(t0, &format!("released {:.1}s after Docker forgot it", forgotten.elapsed().as_secs_f64()));
    kept_intact("after a release of another network")?;

    // A loom-ipam that was down releases at start.
    let down = forgotten_while_down(&h, ipam, &proxy, "down", "10.72.0.0/24")?;
    proxy.forward_all();
    down.ensure_held(ipam, "while loom-ipam is down")?;
    let started = Instant::now();
    ipam.start()?;
    down.wait_released(ipam, period + SLACK)?;
    step(t0, &format!("released {:.1}s after loom-ipam started", started.elapsed().as_secs_f64()));
    kept_intact("after loom-ipam's restart")?;

    // With dockerd stopped nothing is released, however long; once it answers, what it forgot goes.
    let off = forgotten_while_down(&h, ipam, &proxy, "off", "10.73.0.0/24")?;
    // dockerd stops kept's container on the way out: that address goes too, the pool stays.
    h.stop_docker()?;
    ipam.start()?;
    std::thread::sleep(period * 2);
    off.ensure_held(ipam, "with dockerd stopped for two reconcile periods")?;
    kept_intact("with dockerd stopped for two reconcile periods")?;
    let log = std::fs::read_to_string(ipam.log_path())?;
    ensure!(log.contains("nothing is removed"), "loom-ipam did not say it removes nothing without dockerd");
    step(t0, "nothing released while dockerd was stopped");
    h.start_docker()?;
    proxy.forward_all();
    let answering = Instant::now();
    off.wait_released(ipam, period + SLACK)?;
    step(t0, &format!("released {:.1}s after dockerd came back", answering.elapsed().as_secs_f64()));
    // dockerd stopped kept's container while the proxy kept the release from loom-ipam: the
    // address goes, the network's pool, gateway and auxiliary address stay.
    let container_address = kept.address_key();
    wait_until(period + SLACK, Duration::from_millis(250), "kept's stopped container's address to go", || {
        Ok(!kept.keys(ipam)?.contains(&container_address))
    })?;
    let keys = kept.keys(ipam)?;
    ensure!(kept_keys.iter().all(|k| keys.contains(k)), "kept lost what Docker still has: {keys:?}");
    ensure!(auto.keys(ipam)?.contains(&auto.pool_key()), "the default pool of a network Docker still has was released");

    for net in [&kept, &auto] {
        h.docker(&["network", "rm", &net.name])?;
    }
    let left: Vec<String> = embedded_store_keys(ipam)?.into_iter().filter(|k| k.starts_with("ipam/")).collect();
    ensure!(left.is_empty(), "loom-ipam still holds {left:?} after every network is gone");
    Ok(())
}

/// Where loom-ipam keeps a pool of `subnet` (`10.80.0.0/24`) in etcd, and its addresses.
fn etcd_pool_key(subnet: &str) -> String {
    format!("/netloom/v1/ipam/pools/LocalDefault/{}", subnet.replace('/', "_"))
}

fn etcd_address_key(subnet: &str, ip: &str) -> String {
    format!("/netloom/v1/ipam/addrs/LocalDefault/{}/ips/{ip}", subnet.replace('/', "_"))
}

/// How many hosts hold the pool of `subnet`, by their reference counts (empty: no such pool).
fn pool_references(c: &Cluster, subnet: &str) -> Result<Vec<u64>> {
    let endpoint = UnderlayEtcd::endpoint(c, 0);
    let out =
        c.underlay_exec(&["etcdctl", "--endpoints", &endpoint, "get", "--print-value-only", &etcd_pool_key(subnet)])?;
    if out.trim().is_empty() {
        return Ok(vec![]);
    }
    let record: serde_json::Value = serde_json::from_str(out.trim()).context("the pool record is not JSON")?;
    let hosts = record["hosts"].as_object().context("the pool record has no hosts")?;
    Ok(hosts.values().filter_map(|v| v.as_u64()).collect())
}

/// Two hosts, one etcd, the same subnet on both (one cluster-wide pool): Docker on h1 forgets its
/// network and container, and h1's loom-ipam drops only its own reference and address; h2's
/// container keeps its address, the pool and its gateway stay.
fn shared_pool_scenario(c: &Cluster, docker: DockerVersion) -> Result<()> {
    let t0 = Instant::now();
    let etcd = UnderlayEtcd::start(c, 1)?;
    let store = etcd.url(c);
    let hosts = c.add_hosts(vec![HostConfig::new("h1", docker), HostConfig::new("h2", docker)])?;
    let (h1, h2) = (&hosts[0], &hosts[1]);
    let args = [&FAST_RECONCILE[..], &["--log-level", "debug", "--store", &store]].concat();
    let (ipam1, proxy) = h1.start_plugin_behind_proxy("loom-ipam", &args)?;
    let ipam2 = h2.start_plugin("loom-ipam", &args)?;
    let subnet = "10.80.0.0/24";
    let mut nets = Vec::new();
    for h in [h1, h2] {
        h.start_plugin("loom-null", &["--log-level", "debug"])?;
        nets.push(Net::create(h, "shared", &["--subnet", subnet])?);
    }
    let (on_h1, on_h2) = (&nets[0], &nets[1]);
    ensure!(on_h1.address != on_h2.address, "both hosts' containers got {}", on_h1.address);
    ensure!(pool_references(c, subnet)? == [1, 1], "each host holds the pool once: {:?}", pool_references(c, subnet)?);
    let keys = etcd.keys(c, 0, "/netloom/v1/ipam/addrs/")?;
    let expected = [&on_h1.address, &on_h2.address, "10.80.0.1"].map(|ip| etcd_address_key(subnet, ip));
    ensure!(expected.iter().all(|k| keys.contains(k)), "addresses missing from etcd: {keys:?}");
    step(t0, "one pool, held by both hosts");

    on_h1.forget(h1, &proxy)?;
    proxy.forward_all();
    let h1_address = etcd_address_key(subnet, &on_h1.address);
    wait_until(
        ipam1.reconcile_period() + SLACK,
        Duration::from_millis(250),
        "h1's reference and address to go",
        || Ok(pool_references(c, subnet)? == [1] && !etcd.keys(c, 0, &h1_address)?.contains(&h1_address)),
    )?;
    step(t0, "h1's reference and address released");
    // h2's loom-ipam, whose Docker has everything, keeps it all, pass after pass.
    std::thread::sleep(ipam2.reconcile_period());
    ensure!(pool_references(c, subnet)? == [1], "h2's reference went: {:?}", pool_references(c, subnet)?);
    let keys = etcd.keys(c, 0, "/netloom/v1/ipam/addrs/")?;
    ensure!(expected[1..].iter().all(|k| keys.contains(k)), "h2's address or the gateway went: {keys:?}");
    ensure!(h2.container_ip(&on_h2.container, "shared")? == on_h2.address, "h2's container lost its address");

    h2.docker(&["rm", "-f", &on_h2.container])?;
    h2.docker(&["network", "rm", "shared"])?;
    let left = etcd.keys(c, 0, "/netloom/v1/ipam/")?;
    ensure!(left.is_empty(), "loom-ipam still holds {left:?} after both networks are gone");
    Ok(())
}

scenario_tests! {
    ipam_reconcile_docker20: "ipamrec20" => |c| docker_scenario(c, DockerVersion::V20),
    ipam_reconcile_docker26: "ipamrec26" => |c| docker_scenario(c, DockerVersion::V26),
    ipam_reconcile_shared_pool_docker20: "ipamshr20" => |c| shared_pool_scenario(c, DockerVersion::V20),
    ipam_reconcile_shared_pool_docker26: "ipamshr26" => |c| shared_pool_scenario(c, DockerVersion::V26),
}
