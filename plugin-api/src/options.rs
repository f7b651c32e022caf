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

/// Reads one network's options, typed: built with the keys the driver understands (anything else
/// is refused at once, listing them), then asked for each key's value.
pub struct OptionReader<'a> {
    generic: &'a BTreeMap<String, String>,
}

impl<'a> OptionReader<'a> {
    pub fn new(generic: &'a BTreeMap<String, String>, known: &[&str], driver: &str) -> Result<Self> {
        reject_unknown(generic, known, driver)?;
        Ok(Self { generic })
    }

    /// The value given for `key`, trimmed; None when the key is absent.
    pub fn text(&self, key: &str) -> Option<&'a str> {
        self.generic.get(key).map(|v| v.trim())
    }

    /// A boolean as Go's strconv.ParseBool reads it; `default` when absent.
    pub fn bool(&self, key: &str, default: bool) -> Result<bool> {
        self.text(key).map_or(Ok(default), |value| parse_bool(key, value))
    }

    /// `com.docker.network.driver.mtu`, range-checked; None when absent or 0 (the default).
    pub fn mtu(&self) -> Result<Option<u32>> {
        self.text(MTU).map_or(Ok(None), parse_mtu)
    }

    /// The value of `key` read by `parse`; None when absent.
    pub fn parsed<T>(&self, key: &str, parse: impl FnOnce(&'a str) -> Result<T>) -> Result<Option<T>> {
        self.text(key).map(parse).transpose()
    }
}

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

    #[test]
    fn the_reader_types_each_key() {
        let generic: BTreeMap<String, String> =
            [("flag", " False "), ("name", " br0 "), (MTU, "1400")].map(|(k, v)| (k.to_string(), v.to_string())).into();
        let reader = OptionReader::new(&generic, &["flag", "name", "other", MTU], "loom-x").unwrap();
        assert!(!reader.bool("flag", true).unwrap());
        assert!(reader.bool("other", true).unwrap());
        assert_eq!(reader.text("name"), Some("br0"));
        assert_eq!(reader.mtu().unwrap(), Some(1400));
        assert_eq!(reader.parsed("name", |v| anyhow::Ok(v.len())).unwrap(), Some(3));
        assert_eq!(reader.parsed("other", |v| anyhow::Ok(v.len())).unwrap(), None);
        let err = OptionReader::new(&generic, &["flag"], "loom-x").err().unwrap().to_string();
        assert!(
            err.starts_with("unknown option(s) com.docker.network.driver.mtu, name; loom-x understands flag"),
            "{err}"
        );
    }
}
