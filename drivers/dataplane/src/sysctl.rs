//! `/proc/sys` knobs; under `/proc/sys/net` they apply to the caller's network namespace.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result};

fn path(key: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(key.replace('.', "/"))
}

pub fn read(key: &str) -> Result<String> {
    let value = fs::read_to_string(path(key)).with_context(|| format!("reading sysctl {key}"))?;
    Ok(value.trim().to_string())
}

/// Writes `value` unless it is already set, so that read-only /proc/sys with the right value passes.
pub fn ensure(key: &str, value: &str) -> Result<()> {
    if read(key).ok().as_deref() == Some(value) {
        return Ok(());
    }
    fs::write(path(key), value).with_context(|| format!("setting sysctl {key}={value}"))
}

/// The per-interface form, e.g. `net.ipv4.conf.<iface>.route_localnet`; the interface name may hold dots.
pub fn ensure_iface(family_prefix: &str, iface: &str, knob: &str, value: &str) -> Result<()> {
    let file = PathBuf::from("/proc/sys").join(family_prefix.replace('.', "/")).join(iface).join(knob);
    if fs::read_to_string(&file).map(|v| v.trim() == value).unwrap_or(false) {
        return Ok(());
    }
    fs::write(&file, value).with_context(|| format!("setting {}={value}", file.display()))
}
