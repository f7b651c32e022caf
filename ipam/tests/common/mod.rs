//! Shared by the per-backend test files; not every file uses every helper.
#![allow(dead_code)]

pub mod conformance;
pub mod counting;
pub mod etcd;
pub mod fake_consul;
pub mod flaky;
#[path = "../../store/tests/common/local_etcd.rs"]
pub mod local_etcd;
pub mod model;
#[path = "../../store/tests/common/opening.rs"]
pub mod opening;
#[path = "../../store/tests/common/pki.rs"]
pub mod pki;
pub mod scenarios;
pub mod served;
pub mod silent;

use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh key prefix, so tests sharing one store don't see each other's keys.
pub fn unique_prefix(test: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("/netloom-test/{test}-{}-{}/", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}
