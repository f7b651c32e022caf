use std::fmt;

use hyper::StatusCode;

use crate::ids::short_id;

/// An error answered to dockerd as `{"Err": message}` with an HTTP error status.
///
/// Messages reach `docker` users verbatim (prefixed by the method name), so they say what was
/// wrong and, where possible, what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    status: StatusCode,
    message: String,
}

impl PluginError {
    pub fn new(message: impl Into<String>) -> Self {
        Self { status: StatusCode::INTERNAL_SERVER_ERROR, message: message.into() }
    }

    /// An unknown method: the only error answered with 404, which dockerd reads as "not implemented".
    pub fn unknown_method(method: &str) -> Self {
        Self { status: StatusCode::NOT_FOUND, message: format!("this plugin does not implement {method}") }
    }

    /// A request for a network the driver has no record of (created elsewhere, or state lost).
    pub fn unknown_network(driver: &str, id: &str) -> Self {
        Self::new(format!("network {} is not known to {driver}; remove and recreate it", short_id(id)))
    }

    /// A request for an endpoint the driver has no record of.
    pub fn unknown_endpoint(driver: &str, id: &str) -> Self {
        Self::new(format!("endpoint {} is not known to {driver}; recreate the container", short_id(id)))
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PluginError {}

impl From<anyhow::Error> for PluginError {
    fn from(err: anyhow::Error) -> Self {
        // `{:#}` keeps the whole context chain on one line: "creating bridge br-x: File exists".
        PluginError::new(format!("{err:#}"))
    }
}

pub type PluginResult<T> = Result<T, PluginError>;
