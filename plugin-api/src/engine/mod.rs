//! Docker's side of the story: a small Docker Engine API client (which networks and endpoints
//! Docker really has, with the names users gave them) and the reconciliation loop that removes
//! what a driver holds and Docker no longer has.
//!
//! Names shown to users (container names, aliases, network names) come from here and only here.

mod client;
mod decode;
mod events;
#[cfg(test)]
mod fake_docker;
mod http;
mod judge;
pub mod model;
pub mod reconcile;
mod reconciler;

pub use client::{Engine, EngineError, DEFAULT_DOCKER_HOST};
pub use model::{ContainerNames, DockerEndpoint, DockerNetwork, DockerPool, NetworkEvent};
pub use reconcile::{HeldAllocation, HeldEndpoint, HeldNetwork, ReconcileConfig, Reconciler};
