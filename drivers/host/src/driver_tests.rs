//! Requests on one network do not wait for a stuck request on another, and a request that
//! cannot get its turn fails in bounded time naming what it waited for. The store is the slow
//! call here (a wrapper that holds writes for one network until released); the kernel side runs
//! in a network namespace of the test's own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use netloom_driver_kit::testing::{in_new_netns, request, HeldStore, Hold};
use netloom_driver_kit::Registry;
use netloom_plugin_api::wire::network::{CreateEndpointRequest, CreateNetworkRequest};
use netloom_plugin_api::NetworkDriver;
use netloom_store::{DriverRecords, StoreOptions};
use serde_json::json;

use super::*;

fn network(id: &str, pool: &str) -> CreateNetworkRequest {
    request(
        json!({"NetworkID": id, "Options": {"com.docker.network.generic": {}}, "IPv4Data": [{"Pool": pool}], "IPv6Data": []}),
    )
}

fn endpoint(net: &str, ep: &str, address: &str) -> CreateEndpointRequest {
    request(json!({"NetworkID": net, "EndpointID": ep, "Interface": {"Address": address}, "Options": {}}))
}

#[test]
fn a_stuck_network_holds_up_only_itself() {
    in_new_netns(|| {
        Box::pin(async {
            let dir = tempfile::tempdir().unwrap();
            let embedded = netloom_store::open_with(None, dir.path(), StoreOptions::default()).await.unwrap();
            let store = Arc::new(HeldStore::new(embedded, "endpoints/slow/", Hold::Writes));
            let netlink = Netlink::connect().unwrap();
            let firewall = netloom_firewall::open(netloom_firewall::BackendKind::Nftables).await.unwrap();
            let registry = Registry::load(DRIVER, DriverRecords::new(store.clone(), "host", "h1")).await.unwrap();
            let mut driver = HostDriver::start(netlink, firewall, registry).await.unwrap();
            driver.registry.lock_wait = Duration::from_millis(300);
            let driver = Arc::new(driver);
            driver.create_network(network("slow", "10.70.0.0/24")).await.unwrap();
            driver.create_network(network("fast", "10.71.0.0/24")).await.unwrap();

            let stuck = {
                let driver = driver.clone();
                tokio::spawn(async move { driver.create_endpoint(endpoint("slow", "s1", "10.70.0.2/24")).await })
            };
            tokio::time::sleep(Duration::from_millis(50)).await;

            // Another network goes on at once, and so does a new network.
            let started = Instant::now();
            driver.create_endpoint(endpoint("fast", "f1", "10.71.0.2/24")).await.unwrap();
            driver.create_network(network("third", "10.72.0.0/24")).await.unwrap();
            assert!(
                started.elapsed() < Duration::from_millis(250),
                "waited {:?} behind the stuck network",
                started.elapsed()
            );

            // The stuck network's next request gives up in bounded time, saying why.
            let started = Instant::now();
            let err =
                driver.delete_endpoint(request(json!({"NetworkID": "slow", "EndpointID": "s1"}))).await.unwrap_err();
            assert!(started.elapsed() < Duration::from_secs(2));
            let message = err.message();
            assert!(
                message.contains(
                    "timed out after 300 ms waiting for loom-host network slow, held by CreateEndpoint of s1"
                ),
                "{message}"
            );

            // Once the store answers, the stuck request completes and the network is usable.
            store.release();
            stuck.await.unwrap().unwrap();
            store.release();
            driver
                .create_endpoint(endpoint("slow", "s2", "10.70.0.3/24"))
                .await
                .unwrap_or_else(|e| panic!("{}", e.message()));
        })
    });
}
