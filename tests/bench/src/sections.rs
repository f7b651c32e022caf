//! The benchmark's sections and how each is run.

use anyhow::Result;

use crate::config::Config;
use crate::report::Report;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    /// `docker run -d` latency, netloom vs built-in bridge and overlay.
    Attach,
    /// Driver-side cost per request through the plugin socket, and its scaling.
    Driver,
    /// TCP throughput with iperf3.
    Throughput,
    /// RSS, socket-ready time, reconcile time.
    Footprint,
    /// Container names across hosts: lookup latency, time for a name to come or go.
    Dns,
}

impl Section {
    pub const ALL: [Section; 5] =
        [Section::Driver, Section::Footprint, Section::Attach, Section::Throughput, Section::Dns];

    pub fn run(self, config: &Config, report: &mut Report) -> Result<()> {
        match self {
            Section::Attach => crate::attach::run(config, report),
            Section::Driver => crate::driver_cost::run(config, report),
            Section::Throughput => crate::throughput::run(config, report),
            Section::Footprint => crate::footprint::run(config, report),
            Section::Dns => crate::dns::run(config, report),
        }
    }
}
