//! JSON wire types of Docker's remote-plugin protocol, with Docker's exact field names.
//!
//! Unknown fields are tolerated (newer daemons add some), required fields are not defaulted
//! so that a request missing them is rejected, and Go's `null` maps and slices decode as empty.

pub mod ipam;
mod json;
pub mod network;
pub mod ports;

use serde::{Deserialize, Serialize};

/// `POST /Plugin.Activate` answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ActivateResponse {
    #[serde(rename = "Implements")]
    pub implements: Vec<String>,
}
