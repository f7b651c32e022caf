//! The store's operations, counted where every store this process opens passes (netloom-store
//! wraps each one), encoded at scrape time.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;

#[derive(Debug, Default)]
pub(crate) struct StoreCollector;

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let counts = netloom_store::operation_counts();
        let rows = counts.snapshot();
        if rows.is_empty() {
            return Ok(());
        }
        let mut family = encoder.encode_descriptor(
            "netloom_store_operations",
            "Store operations by kind and outcome (ok, conflict: a transaction's condition failed, unavailable, error).",
            None,
            MetricType::Counter,
        )?;
        for row in rows {
            let labels = [("op", row.op), ("outcome", row.outcome)];
            ConstCounter::new(row.count).encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "netloom_store_operation_seconds",
            "Time spent in store operations, by kind.",
            None,
            MetricType::Counter,
        )?;
        for (op, seconds) in counts.seconds() {
            ConstCounter::new(seconds).encode(family.encode_family(&[("op", op)])?)?;
        }
        Ok(())
    }
}
