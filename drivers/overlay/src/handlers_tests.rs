//! A request stuck in the shared store holds up only its own network: requests on other networks
//! answer at once and the in-memory state stays free. The store is the slow call here (a wrapper
//! that holds reads of one network's record until released); the test runs in a network
//! namespace of its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use netloom_driver_kit::testing::{in_new_netns, request, HeldStore, Hold};
use netloom_plugin_api::NetworkDriver;
use netloom_store::{self as store, DEFAULT_PREFIX};
use serde_json::json;

use super::*;
use crate::test_overlay::TestHost;

#[test]
fn a_request_stuck_in_the_store_holds_up_only_its_network() {
    in_new_netns(|| {
        Box::pin(async {
            let dir = tempfile::tempdir().unwrap();
            let inner = store::open(None, &dir.path().join("shared"), DEFAULT_PREFIX).await.unwrap();
            let held = Arc::new(HeldStore::new(inner, "slow", Hold::Reads));
            let overlay = TestHost::new("h1", Mode::Global, dir.path()).overlay(held.clone()).await;
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
