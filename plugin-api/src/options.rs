//! Parsing a network's `-o key=value` driver options the way Docker's own drivers read them.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Result};

/// The MTU key every Docker driver understands.
pub const MTU: &str = "com.docker.network.driver.mtu";

/// Smallest MTU that still carries IPv4 (RFC 791); IPv6 needs 1280.
pub const MIN_MTU: u32 = 68;
pub const MAX_MTU: u32 = 65535;
/// The smallest MTU IPv6 allows.
pub const IPV6_MIN_MTU: u32 = 1280;

/// Refuses keys `driver` does not understand, listing the ones it does.
pub fn reject_unknown(generic: &BTreeMap<String, String>, known: &[&str], driver: &str) -> Result<()> {
    let unknown: Vec<&str> = generic.keys().map(String::as_str).filter(|k| !known.contains(k)).collect();
    if !unknown.is_empty() {
        bail!("unknown option(s) {}; {driver} understands {}", unknown.join(", "), known.join(", "));
    }
    Ok(())
}

/// Go's strconv.ParseBool, which is what Docker accepts for boolean options.
pub fn parse_bool(key: &str, value: &str) -> Result<bool> {
    match value.trim() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => bail!("{key}={value:?} is not a boolean; use true or false"),
    }
}

/// `com.docker.network.driver.mtu`: None for 0 (the kernel's default).
pub fn parse_mtu(value: &str) -> Result<Option<u32>> {
    let value = value.trim();
    let mtu: u32 = value.parse().map_err(|_| anyhow!("{MTU}={value:?} is not a number; use e.g. 1450"))?;
    match mtu {
        0 => Ok(None),
        MIN_MTU..=MAX_MTU => Ok(Some(mtu)),
        _ => bail!("{MTU}={mtu} is out of range; use {MIN_MTU} to {MAX_MTU} (or 0 for the default)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bools_mtus_and_unknown_keys() {
        assert!(parse_bool("k", "True").unwrap() && !parse_bool("k", "0").unwrap());
        assert!(parse_bool("k", "yes").unwrap_err().to_string().contains("k=\"yes\" is not a boolean"));
        assert_eq!(parse_mtu("0").unwrap(), None);
        assert_eq!(parse_mtu("1400").unwrap(), Some(1400));
        for (bad, why) in
            [("big", "not a number"), ("-1", "not a number"), ("20", "out of range"), ("70000", "out of range")]
        {
            assert!(parse_mtu(bad).unwrap_err().to_string().contains(why), "{bad}");
        }
        let generic: BTreeMap<String, String> =
            [("a".to_string(), String::new()), ("zz".to_string(), String::new())].into();
        let err = reject_unknown(&generic, &["a", "b"], "loom-x").unwrap_err().to_string();
        assert_eq!(err, "unknown option(s) zz; loom-x understands a, b");
    }
}
