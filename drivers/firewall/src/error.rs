//! The errors callers tell apart.

/// Errors callers may want to tell apart (returned inside `anyhow::Error`; use `downcast_ref`).
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// The host address/port is already published to another destination.
    #[error("{0} is already published to another container")]
    PortInUse(String),
    /// The policy or mapping cannot be expressed (bad interface name, mixed families, …).
    #[error("invalid firewall request: {0}")]
    Invalid(String),
}
