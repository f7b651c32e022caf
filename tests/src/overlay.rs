//! loom-ipam and a local-scope loom-overlay on a host, over a shared store: the Docker 23+
//! multi-host setup every overlay scenario starts from.

use std::sync::Arc;

use anyhow::Result;

use crate::host::Host;
use crate::plugin::Plugin;

/// loom-overlay's log level unless the scenario picks one.
pub const OVERLAY_LOG: &str = "info,loom_overlay=debug";

/// How to start the pair on a host: `loom-ipam --store S` and `loom-overlay --scope local --store S
/// --advertise-addr <the host's underlay address>`, plus what the scenario adds.
#[derive(Debug, Clone)]
pub struct LocalOverlay {
    store: String,
    store_options: Vec<String>,
    overlay_args: Vec<String>,
    log_level: String,
    advertise: Option<String>,
}

/// The two plugins started on a host.
pub struct OverlayPlugins {
    pub ipam: Arc<Plugin>,
    pub overlay: Arc<Plugin>,
}

impl LocalOverlay {
    pub fn new(store: &str) -> LocalOverlay {
        LocalOverlay {
            store: store.to_owned(),
            store_options: Vec::new(),
            overlay_args: Vec::new(),
            log_level: OVERLAY_LOG.to_owned(),
            advertise: None,
        }
    }

    /// Store options both binaries get (e.g. `UnderlayEtcd::store_tls_args`).
    pub fn store_options<S: AsRef<str>>(mut self, args: &[S]) -> LocalOverlay {
        self.store_options.extend(args.iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// More loom-overlay arguments (lease, grace, firewall, DNS, ...).
    pub fn overlay_args<S: AsRef<str>>(mut self, args: &[S]) -> LocalOverlay {
        self.overlay_args.extend(args.iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// loom-overlay's `--log-level` ([`OVERLAY_LOG`] unless set).
    pub fn log_level(mut self, level: &str) -> LocalOverlay {
        level.clone_into(&mut self.log_level);
        self
    }

    /// loom-overlay's `--advertise-addr` (the host's underlay IPv4 address unless set).
    pub fn advertise_addr(mut self, addr: &str) -> LocalOverlay {
        self.advertise = Some(addr.to_owned());
        self
    }

    /// Starts loom-ipam, then loom-overlay, on `h`; each is listening when this returns.
    pub fn start(&self, h: &Host) -> Result<OverlayPlugins> {
        let mut ipam = vec!["--store", self.store.as_str(), "--log-level", "info"];
        ipam.extend(self.store_options.iter().map(String::as_str));
        let ipam = h.start_plugin("loom-ipam", &ipam)?;
        let vtep = self.advertise.clone().unwrap_or_else(|| h.underlay_ip().to_string());
        let mut overlay = vec!["--scope", "local", "--store", self.store.as_str(), "--advertise-addr", vtep.as_str()];
        overlay.extend(self.store_options.iter().map(String::as_str));
        overlay.extend(["--log-level", self.log_level.as_str()]);
        overlay.extend(self.overlay_args.iter().map(String::as_str));
        let overlay = h.start_plugin("loom-overlay", &overlay)?;
        Ok(OverlayPlugins { ipam, overlay })
    }
}
