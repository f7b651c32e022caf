//! JSON wire types of Docker's remote-plugin protocol, with Docker's exact field names.
//!
//! Unknown fields are tolerated (newer daemons add some), required fields are not defaulted
//! so that a request missing them is rejected, and Go's `null` maps and slices decode as empty.

pub mod ipam;
pub mod network;
pub mod ports;

use serde::{Deserialize, Deserializer, Serialize};

/// `POST /Plugin.Activate` answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ActivateResponse {
    #[serde(rename = "Implements")]
    pub implements: Vec<String>,
}

/// Decodes a JSON `null` as the type's default (Go encodes nil maps and slices as `null`).
pub(crate) fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

pub(crate) fn is_false(value: &bool) -> bool {
    !*value
}
