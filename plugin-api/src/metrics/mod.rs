//! Prometheus metrics: one registry per process, counted where every driver passes (the socket
//! server, the reconciler), and served as `GET /metrics` on `--metrics-addr`.
//!
//! A driver adds its own metrics to the same registry with [`Metrics::register`], e.g.
//! `metrics::global().register(|r| r.register("netloom_dns_queries", "...", family.clone()))`;
//! [`prometheus_client`] is re-exported so it needs no dependency of its own.

mod held;
mod http;
mod store;

use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hyper::StatusCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub use prometheus_client;

pub use http::{bind, serve};

use crate::engine::reconcile::Subject;
use crate::server::Plugin;
use held::{Held, HeldCollector};

/// Request durations from 0.1 ms (an answer from memory) to 10 s (a slow store or kernel).
const DURATION_BUCKETS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The `method` of a request the plugin does not implement: whatever a client sends stays one series.
const UNKNOWN_METHOD: &str = "unknown";

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn global() -> &'static Metrics {
    &METRICS
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

type Durations = Family<MethodLabels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    durations: Durations,
    removals: Family<KindLabels, Counter>,
    held: Arc<HeldCollector>,
}

impl Metrics {
    fn new() -> Metrics {
        let metrics = Metrics {
            registry: Mutex::new(Registry::default()),
            requests: Family::default(),
            durations: Durations::new_with_constructor(|| Histogram::new(DURATION_BUCKETS)),
            removals: Family::default(),
            held: Arc::default(),
        };
        metrics.register(|r| {
            r.register("netloom_requests", "Plugin requests answered, by method and outcome", metrics.requests.clone());
            r.register(
                "netloom_request_duration_seconds",
                "Time to answer a plugin request, by method",
                metrics.durations.clone(),
            );
            r.register(
                "netloom_reconciler_removals",
                "What the reconciler removed because Docker no longer has it, by kind",
                metrics.removals.clone(),
            );
            r.register_collector(Box::new(metrics.held.clone()));
            r.register_collector(Box::new(store::StoreCollector));
        });
        metrics
    }

    /// Adds metrics to the registry every scrape encodes.
    pub fn register(&self, add: impl FnOnce(&mut Registry)) {
        add(&mut self.registry());
    }

    /// One request answered: `failure` is the error status, if any.
    pub(crate) fn request_done(&self, method: &str, failure: Option<StatusCode>, elapsed: Duration) {
        let method = if failure == Some(StatusCode::NOT_FOUND) { UNKNOWN_METHOD } else { method };
        let outcome = if failure.is_some() { "error" } else { "ok" };
        self.requests.get_or_create(&RequestLabels { method: method.to_string(), outcome }).inc();
        self.durations.get_or_create(&MethodLabels { method: method.to_string() }).observe(elapsed.as_secs_f64());
    }

    /// The reconciler released `subject`.
    pub(crate) fn removed(&self, subject: &Subject) {
        let kind = match subject {
            Subject::Endpoint { .. } => "endpoint",
            Subject::Network { .. } => "network",
            Subject::Address { .. } => "address",
            Subject::Gateway { .. } => "gateway",
            Subject::Pool { .. } => "pool",
        };
        self.removals.get_or_create(&KindLabels { kind }).inc();
    }

    /// The text exposition, with what `plugin` holds asked now.
    pub async fn render(&self, plugin: &Plugin) -> String {
        let held = Held::of(plugin).await;
        let registry = self.registry();
        self.held.set(held);
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry) {
            tracing::warn!(error = %e, "encoding the metrics failed");
        }
        text
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests;
