//! How Go's JSON encoding differs from serde's defaults.

use serde::{Deserialize, Deserializer};

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
