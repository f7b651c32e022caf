//! A request stuck in the shared store holds up only its own network: requests on other networks
//! answer at once and the in-memory state stays free. The store is the slow call here (a wrapper
//! that holds reads of one network's record until released); the test runs in a network
//! namespace of its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use netloom_dataplane::Netlink;
use netloom_driver_kit::testing::{in_new_netns, request, HeldStore, Hold};
use netloom_ipam::{Ipam, IpamConfig};
use netloom_plugin_api::locks::KeyedLocks;
use netloom_plugin_api::NetworkDriver;
use netloom_store::{self as store, DriverRecords, DEFAULT_PREFIX};
use serde_json::json;

use super::*;
use crate::cluster::Shared;
use crate::dns_setup::{DnsListen, DnsSettings};
use crate::fabric::Fabric;
use crate::overlay::Config;
use crate::state::State;

#[test]
fn a_request_stuck_in_the_store_holds_up_only_its_network() {
    in_new_netns(|| {
        Box::pin(async {
            let dir = tempfile::tempdir().unwrap();
            let embedded = store::open(None, &dir.path().join("private"), DEFAULT_PREFIX).await.unwrap();
            let inner = store::open(None, &dir.path().join("shared"), DEFAULT_PREFIX).await.unwrap();
            let held = Arc::new(HeldStore::new(inner, "slow", Hold::Reads));
            let ipam = Ipam::new(held.clone(), "h1", IpamConfig::default()).await.unwrap();
            let config = Config {
                mode: Mode::Global,
                advertise: None,
                port: 4789,
                reconcile_every: Duration::from_secs(10),
                lease_ttl: Duration::from_secs(15),
                dead_host_grace: Duration::from_secs(300),
                peer_grace: Duration::from_secs(300),
                netns_dir: None,
                firewall: None,
                guard_firewall: netloom_firewall::BackendKind::Nftables,
                dns: DnsSettings { listen: DnsListen::Off, resolv_conf: "/etc/resolv.conf".into() },
            };
            let overlay = Arc::new(Overlay {
                config,
                host: "h1".into(),
                shared: Ok(Shared { store: held.clone(), ipam }),
                local: DriverRecords::new(embedded, "overlay", "h1"),
                fabric: Fabric::new(Netlink::connect().unwrap(), dir.path().join("netns"), 4789),
                gateway: None,
                guard: None,
                gateway_lock: tokio::sync::Mutex::new(()),
                state: std::sync::Mutex::new(State::default()),
                turns: KeyedLocks::default(),
                fdb_turns: KeyedLocks::default(),
                directory: None,
                dns_server: std::sync::Mutex::new(None),
            });
            let driver = Arc::new(Driver(overlay.clone()));

            // Removing a network this host never used asks the store, which does not answer.
            let stuck = {
                let driver = driver.clone();
                tokio::spawn(async move { driver.delete_network(request(json!({"NetworkID": "slow"}))).await })
            };
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(!stuck.is_finished());

            // Meanwhile other networks' requests are answered at once, and the state is free.
            let started = Instant::now();
            driver.delete_network(request(json!({"NetworkID": "fast"}))).await.unwrap();
            let err = driver.join(request(json!({"NetworkID": "fast", "EndpointID": "e1"}))).await.unwrap_err();
            assert!(err.message().contains("e1"), "{}", err.message());
            assert!(overlay.state.try_lock().is_ok(), "the state is locked across a store call");
            assert!(started.elapsed() < Duration::from_millis(250), "waited {:?}", started.elapsed());

            // Once the store answers, the stuck request completes.
            held.release();
            tokio::time::timeout(Duration::from_secs(5), stuck).await.unwrap().unwrap().unwrap();
        })
    });
}
