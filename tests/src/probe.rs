//! Reachability checks from inside containers, shared by the scenarios.

use anyhow::{bail, Context, Result};

use crate::Host;

/// `container` reaches `target` (one ICMP echo, 2 s).
pub fn ping(h: &Host, container: &str, target: &str) -> Result<()> {
    h.container_exec(container, &["ping", "-c", "1", "-W", "2", target])
        .with_context(|| format!("{container} cannot ping {target}"))
        .map(drop)
}

/// `container` does not reach `target`.
pub fn no_ping(h: &Host, container: &str, target: &str) -> Result<()> {
    if h.container_exec(container, &["ping", "-c", "1", "-W", "1", target]).is_ok() {
        bail!("{container} can ping {target}, but must not");
    }
    Ok(())
}
