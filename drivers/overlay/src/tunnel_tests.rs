//! Encrypted networks at the handlers: the tunnel comes with the first encrypted network and goes
//! with the last, peers and FDB entries follow the store's tunnel records, rotation changes the
//! published key, and a tunnel that cannot start leaves nothing behind. Two "hosts" share one
//! store in a network namespace of the test's own, their underlay its loopback.

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use netloom_driver_kit::testing::{in_new_netns, request};
use netloom_plugin_api::NetworkDriver;
use netloom_store::{self as store, Store, DEFAULT_PREFIX};
use serde_json::{json, Value};

use crate::crypt::keys::KEY_FILE;
use crate::crypt::NETNS_NAME;
use crate::fabric::VXLAN;
use crate::handlers::{Driver, ROTATE_KEY};
use crate::overlay::Overlay;
use crate::records::{self, Mode, TunnelRecord};
use crate::test_overlay::TestHost;

fn create(id: &str, subnet: &str, options: Value) -> Value {
    json!({
        "NetworkID": id,
        "Options": {"com.docker.network.generic": options},
        "IPv4Data": [{"AddressSpace": "", "Pool": subnet}],
    })
}

async fn loopback_up() {
    let netlink = netloom_dataplane::Netlink::connect().unwrap();
    let lo = netlink.link("lo").await.unwrap().unwrap();
    netlink.set_up(&lo).await.unwrap();
}

/// The source address of a network's VXLAN link.
async fn local_of(dp: &crate::fabric::NetDataplane) -> IpAddr {
    dp.netlink.vxlan_info(VXLAN).await.unwrap().unwrap().local.unwrap()
}

async fn keys(store: &Arc<dyn Store>, prefix: &str) -> Vec<String> {
    store.list(prefix).await.unwrap().into_iter().map(|kv| kv.key).collect()
}

async fn tunnel_record(store: &Arc<dyn Store>, host: &str) -> Option<TunnelRecord> {
    let kv = store.get(&records::tunnel_key(host)).await.unwrap()?;
    Some(records::decode(&kv.key, &kv.value).unwrap())
}

/// Nothing of a tunnel on this host: namespace, key file, store record, address claim.
async fn assert_no_tunnel(store: &Arc<dyn Store>, overlay: &Overlay, dir: &Path) {
    assert!(!dir.join("netns").join(NETNS_NAME).exists(), "tunnel namespace left");
    assert!(!dir.join("state").join(KEY_FILE).exists(), "key file left");
    assert!(tunnel_record(store, &overlay.host).await.is_none(), "tunnel record left");
    let claims: Vec<_> = store
        .list(records::TUNNEL_IPS)
        .await
        .unwrap()
        .into_iter()
        .filter(|kv| kv.value == overlay.host.as_bytes())
        .collect();
    assert!(claims.is_empty(), "tunnel address claims left: {claims:?}");
    assert!(overlay.crypt.lock().await.is_none());
}

/// One host "h1" on its loopback with a store of its own, set up by `tweak`.
async fn lone_host(dir: &Path, tweak: impl FnOnce(&mut TestHost)) -> (Arc<dyn Store>, Arc<Overlay>, Driver) {
    loopback_up().await;
    let shared = store::open(None, &dir.join("shared"), DEFAULT_PREFIX).await.unwrap();
    let mut host = TestHost::new("h1", Mode::Local, dir);
    host.advertise = Some("127.0.0.1");
    tweak(&mut host);
    let overlay = host.overlay(shared.clone()).await;
    (shared, overlay.clone(), Driver(overlay))
}

#[test]
fn an_encrypted_network_that_cannot_start_leaves_nothing() {
    in_new_netns(|| {
        Box::pin(async {
            let dir = tempfile::tempdir().unwrap();
            let (shared, overlay, driver) =
                lone_host(dir.path(), |host| host.tun_device = dir.path().join("no-tun-here")).await;

            // The path works: a plain network is made.
            driver.create_network(request(create("plain", "10.8.0.0/24", json!({})))).await.unwrap();
            let before = keys(&shared, "").await;

            let err = driver.create_network(request(create("secret", "10.9.0.0/24", json!({"encrypted": ""})))).await;
            let message = err.unwrap_err().message().to_string();
            assert!(message.contains("encrypted networks cannot start on this host"), "{message}");
            assert!(message.contains("no-tun-here"), "the cause is named: {message}");

            assert_eq!(keys(&shared, "").await, before, "the store is as before (network, subnet, VNI, claims)");
            assert_no_tunnel(&shared, &overlay, dir.path()).await;
            assert_eq!(overlay.state().networks.keys().collect::<Vec<_>>(), vec!["plain"]);
            assert!(overlay.local.networks().await.unwrap().contains_key("plain"));
            assert_eq!(overlay.local.networks().await.unwrap().len(), 1, "no private record of the refused one");
            let namespaces = std::fs::read_dir(dir.path().join("netns")).unwrap().count();
            assert_eq!(namespaces, 1, "only the plain network's namespace");

            // An MTU that fits a plain network but not WireGuard on top is refused, naming both.
            let err = driver
                .create_network(request(create(
                    "big",
                    "10.7.0.0/24",
                    json!({"encrypted": "true", "com.docker.network.driver.mtu": "65490"}),
                )))
                .await
                .unwrap_err();
            assert!(err.message().contains("WireGuard takes 60 bytes (over IPv4) and VXLAN 50"), "{}", err.message());
            assert_eq!(keys(&shared, "").await, before);
            driver.delete_network(request(json!({"NetworkID": "plain"}))).await.unwrap();
        })
    });
}

/// Whether this kernel makes WireGuard links, asked through iproute2 (in the calling thread's
/// network namespace) rather than the driver's own probe, so that a wrong probe shows.
fn kernel_wireguard_by_iproute() -> bool {
    let ip = |args: &[&str]| std::process::Command::new("ip").args(args).output().expect("running ip");
    let made = ip(&["link", "add", "loomwgip", "type", "wireguard"]).status.success();
    if made {
        assert!(ip(&["link", "del", "loomwgip"]).status.success(), "removing the probe link loomwgip");
    }
    made
}

/// `--wireguard kernel`: on a kernel without WireGuard (this machine's) an encrypted network is
/// refused naming the missing module and leaves nothing; where the kernel has it, the device is
/// the kernel's.
#[test]
fn wireguard_kernel_mode_needs_the_kernel_module() {
    in_new_netns(|| {
        Box::pin(async {
            let dir = tempfile::tempdir().unwrap();
            let (shared, overlay, driver) =
                lone_host(dir.path(), |host| host.wireguard = crate::crypt::WireguardMode::Kernel).await;
            let kernel_has_it = kernel_wireguard_by_iproute();
            // The path works: a plain network is made (and the host's own record written).
            driver.create_network(request(create("plain", "10.8.0.0/24", json!({})))).await.unwrap();
            let before = keys(&shared, "").await;
            let made = driver.create_network(request(create("secret", "10.9.0.0/24", json!({"encrypted": ""})))).await;
            if kernel_has_it {
                println!("this kernel has WireGuard: checking that it serves the tunnel");
                made.unwrap();
                let crypt = overlay.crypt.lock().await;
                assert_eq!(crypt.as_ref().unwrap().tunnel.kind(), crate::crypt::TunnelKind::Kernel);
                drop(crypt);
                driver.delete_network(request(json!({"NetworkID": "secret"}))).await.unwrap();
            } else {
                println!("this kernel has no WireGuard: checking the refusal");
                let message = made.unwrap_err().message().to_string();
                assert!(message.contains("CONFIG_WIREGUARD"), "the missing module is named: {message}");
                assert!(message.contains("--wireguard auto or userspace"), "what to do is said: {message}");
                assert_eq!(keys(&shared, "").await, before, "the store is as before");
            }
            assert_no_tunnel(&shared, &overlay, dir.path()).await;
            driver.delete_network(request(json!({"NetworkID": "plain"}))).await.unwrap();
        })
    });
}

#[test]
fn encrypted_networks_ride_the_tunnel_until_the_last_goes() {
    in_new_netns(|| {
        Box::pin(async {
            loopback_up().await;
            let dir = tempfile::tempdir().unwrap();
            let shared = store::open(None, &dir.path().join("shared"), DEFAULT_PREFIX).await.unwrap();
            let (dir1, dir2) = (dir.path().join("h1"), dir.path().join("h2"));
            let mut h1 = TestHost::new("h1", Mode::Local, &dir1);
            h1.advertise = Some("127.0.0.1");
            let mut h2 = TestHost::new("h2", Mode::Local, &dir2);
            h2.advertise = Some("127.0.0.1");
            h2.wireguard_port = 51821;
            let (ov1, ov2) = (h1.overlay(shared.clone()).await, h2.overlay(shared.clone()).await);
            let (d1, d2) = (Driver(ov1.clone()), Driver(ov2.clone()));
            let secret = || json!({"encrypted": "", "com.docker.network.driver.overlay.vxlanid_list": "5009"});

            // No tunnel for a plain network.
            d1.create_network(request(create("p1", "10.8.0.0/24", json!({})))).await.unwrap();
            assert_no_tunnel(&shared, &ov1, &dir1).await;

            d1.create_network(request(create("s1", "10.9.0.0/24", secret()))).await.unwrap();
            let t1 = tunnel_record(&shared, "h1").await.expect("h1's tunnel record");
            assert!("100.64.0.0/10".parse::<ipnetwork::IpNetwork>().unwrap().contains(t1.tunnel_ip), "{t1:?}");
            assert_eq!(t1.endpoint, "127.0.0.1:51820".parse().unwrap());
            let claim = shared.get(&records::tunnel_ip_key(t1.tunnel_ip)).await.unwrap().unwrap();
            assert_eq!(claim.value, b"h1");
            let mode = std::fs::metadata(dir1.join("state").join(KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            assert!(dir1.join("netns").join(NETNS_NAME).exists());

            // The encrypted network's VXLAN link sends from the tunnel address, the plain one's
            // from the underlay; the MTU leaves room for WireGuard.
            let (secret_dp, plain_dp) = {
                let state = ov1.state();
                (
                    state.dataplane("vni-5009").unwrap(),
                    state.dataplanes.values().find(|d| !d.encrypted).unwrap().clone(),
                )
            };
            assert_eq!(local_of(&secret_dp).await, t1.tunnel_ip, "encrypted: from the tunnel address");
            assert_eq!(local_of(&plain_dp).await, "127.0.0.1".parse::<IpAddr>().unwrap(), "plain: from the underlay");
            let mtu = ov1.state().network_by_key("vni-5009").unwrap().config.mtu;
            assert_eq!(mtu, 65536 - 60 - 50);

            // h2 joins: another address; h1's entry for h2's endpoint points at it.
            d2.create_network(request(create("s1-h2", "10.9.0.0/24", secret()))).await.unwrap();
            let t2 = tunnel_record(&shared, "h2").await.expect("h2's tunnel record");
            assert_ne!(t1.tunnel_ip, t2.tunnel_ip);
            d2.create_endpoint(request(json!({
                "NetworkID": "s1-h2", "EndpointID": "e2", "Interface": {"Address": "10.9.0.3/24"},
            })))
            .await
            .unwrap();
            ov1.reconcile_once().await;
            let fdb = secret_dp.netlink.fdb_entries(&secret_dp.vxlan).await.unwrap();
            assert_eq!(fdb.len(), 1, "{fdb:?}");
            assert_eq!(fdb[0].dst, t2.tunnel_ip, "the peer's tunnel address, never its underlay address");
            let peers: Vec<String> =
                ov1.crypt.lock().await.as_ref().unwrap().peers.iter().map(|p| p.host.clone()).collect();
            assert_eq!(peers, vec!["h2".to_string()]);
            let status = ov1.tunnel_status().unwrap();
            assert_eq!(status["tunnel_ip"], t1.tunnel_ip.to_string());
            assert_eq!(
                status["kernel_wireguard"],
                kernel_wireguard_by_iproute(),
                "the status says whether the kernel has WireGuard"
            );
            assert_eq!(status["peers"][0]["tunnel_ip"], t2.tunnel_ip.to_string());

            // Rotation: a new key, published.
            let reply = d1.control(ROTATE_KEY, Value::Null).await.unwrap();
            let rotated = reply["PublicKey"].as_str().unwrap().to_string();
            assert_ne!(rotated, t1.public_key);
            assert_eq!(tunnel_record(&shared, "h1").await.unwrap().public_key, rotated);
            let err = d1.control("Nothing", Value::Null).await.unwrap_err();
            assert!(err.message().contains("Netloom.Nothing"), "{}", err.message());

            // h2 leaves: nothing of its tunnel stays, and h1 drops it as a peer.
            d2.delete_endpoint(request(json!({"NetworkID": "s1-h2", "EndpointID": "e2"}))).await.unwrap();
            d2.delete_network(request(json!({"NetworkID": "s1-h2"}))).await.unwrap();
            assert_no_tunnel(&shared, &ov2, &dir2).await;
            let err = d2.control(ROTATE_KEY, Value::Null).await.unwrap_err();
            assert!(err.message().contains("no tunnel"), "{}", err.message());
            ov1.reconcile_once().await;
            assert!(ov1.crypt.lock().await.as_ref().unwrap().peers.is_empty());

            // h1's last encrypted network goes: the tunnel with it; the plain one stays.
            d1.delete_network(request(json!({"NetworkID": "s1"}))).await.unwrap();
            assert_no_tunnel(&shared, &ov1, &dir1).await;
            assert!(ov1.state().networks.contains_key("p1"));
            d1.delete_network(request(json!({"NetworkID": "p1"}))).await.unwrap();
            let left: Vec<String> =
                keys(&shared, records::ROOT).await.into_iter().filter(|k| !k.starts_with(records::HOSTS)).collect();
            assert!(left.is_empty(), "only the hosts' lease records stay: {left:?}");
        })
    });
}

#[test]
fn a_restarted_driver_brings_its_tunnel_back_and_repairs_a_lost_device() {
    in_new_netns(|| {
        Box::pin(async {
            loopback_up().await;
            let dir = tempfile::tempdir().unwrap();
            let shared = store::open(None, &dir.path().join("shared"), DEFAULT_PREFIX).await.unwrap();
            let host = || {
                let mut h = TestHost::new("h1", Mode::Local, dir.path());
                h.advertise = Some("127.0.0.1");
                h
            };
            let before = {
                let overlay = host().overlay(shared.clone()).await;
                let driver = Driver(overlay.clone());
                driver.create_network(request(create("s1", "10.9.0.0/24", json!({"encrypted": ""})))).await.unwrap();
                tunnel_record(&shared, "h1").await.unwrap()
                // The driver goes away: its userspace device with it.
            };
            let device = |ov: Arc<Overlay>| async move {
                let crypt = ov.crypt.lock().await;
                crypt.as_ref().unwrap().netlink.link(crate::crypt::DEVICE).await.unwrap()
            };

            let overlay = host().overlay(shared.clone()).await;
            overlay.load().await.unwrap();
            overlay.restore().await;
            assert_eq!(tunnel_record(&shared, "h1").await.unwrap(), before, "same key, address and endpoint");
            assert!(device(overlay.clone()).await.is_some(), "the device is back");
            let dp =
                overlay.state().dataplane("vni-4096").or_else(|| overlay.state().dataplanes.values().next().cloned());
            assert_eq!(local_of(&dp.unwrap()).await, before.tunnel_ip);

            // The device deleted by hand: the reconciler starts it again, same address.
            {
                let crypt = overlay.crypt.lock().await;
                let netlink = &crypt.as_ref().unwrap().netlink;
                netlink.delete_link(crate::crypt::DEVICE).await.unwrap();
            }
            assert!(device(overlay.clone()).await.is_none());
            overlay.reconcile_once().await;
            assert!(device(overlay.clone()).await.is_some(), "the device is made again");
            assert_eq!(overlay.crypt.lock().await.as_ref().unwrap().tunnel_ip, before.tunnel_ip);

            Driver(overlay.clone()).delete_network(request(json!({"NetworkID": "s1"}))).await.unwrap();
            assert_no_tunnel(&shared, &overlay, dir.path()).await;
        })
    });
}
