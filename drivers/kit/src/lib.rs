//! What netloom's network drivers share, so that each keeps only its own kernel plumbing: the
//! registry of networks and endpoints with its persistence and per-network turns, port
//! publishing and revoking, teardown that collects every error, the sweep of leftovers tagged as
//! a driver's own, restore at start-up, the endpoint's MAC, the bounded firewall call and overlap
//! check, and the `main` of a driver binary.

pub mod endpoint;
pub mod guard;
pub mod leftovers;
pub mod ports;
pub mod record;
pub mod registry;
pub mod restore;
pub mod serve;
pub mod teardown;
#[cfg(feature = "testing")]
pub mod testing;

pub use netloom_store::DriverRecords;
pub use record::{Endpoint, Network};
pub use registry::{Maps, Registry, Snapshot};
pub use serve::{serve, serve_with_firewall, DriverArgs, FirewallDriverArgs};
pub use teardown::Errors;
