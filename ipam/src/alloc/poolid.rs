//! Pool IDs handed to Docker: `<space>/<subnet>[/<range>]`, e.g. `LocalDefault/172.18.0.0/16` or
//! `GlobalDefault/10.0.1.0/24/10.0.1.128/25`. They name everything needed to find the pool, so they
//! stay valid across restarts and are the same on every host.

use std::fmt;

use super::cidr::Subnet;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolId {
    pub space: String,
    pub subnet: Subnet,
    /// `--ip-range`: where this network's dynamic addresses come from.
    pub range: Option<Subnet>,
}

impl PoolId {
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad =
            || format!("{text:?} is not a pool id of this driver (expected <address space>/<subnet>[/<ip range>])");
        let parts: Vec<&str> = text.split('/').collect();
        let (space, subnet, range) = match parts.as_slice() {
            [space, ip, len] => (*space, format!("{ip}/{len}"), None),
            [space, ip, len, rip, rlen] => (*space, format!("{ip}/{len}"), Some(format!("{rip}/{rlen}"))),
            _ => return Err(bad()),
        };
        validate_space(space).map_err(|_| bad())?;
        let subnet = Subnet::parse(&subnet).map_err(|_| bad())?;
        let range = range.map(|r| Subnet::parse(&r)).transpose().map_err(|_| bad())?;
        // Only canonical ids: what this driver hands out.
        let id = PoolId { space: space.to_string(), subnet, range };
        if id.to_string() != text || range.is_some_and(|r| !subnet.contains(&r)) {
            return Err(bad());
        }
        Ok(id)
    }
}

impl fmt::Display for PoolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.space, self.subnet)?;
        if let Some(range) = &self.range {
            write!(f, "/{range}")?;
        }
        Ok(())
    }
}

/// Address space names become key segments: letters, digits, `_`, `-` and `.`, at most 64.
pub fn validate_space(space: &str) -> Result<(), String> {
    let ok = !space.is_empty()
        && space.len() <= 64
        && space != "."
        && space != ".."
        && space.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "address space {space:?} is not valid: use 1 to 64 letters, digits, '_', '-' or '.' (e.g. LocalDefault)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for id in ["LocalDefault/172.18.0.0/16", "GlobalDefault/10.0.1.0/24/10.0.1.128/25", "x/fd00::/64/fd00::/80"] {
            assert_eq!(PoolId::parse(id).unwrap().to_string(), id);
        }
        let id = PoolId::parse("LocalDefault/172.18.0.0/16/172.18.5.0/24").unwrap();
        assert_eq!(id.space, "LocalDefault");
        assert_eq!(id.range.unwrap().to_string(), "172.18.5.0/24");
    }

    #[test]
    fn rejects_foreign_ids() {
        for bad in [
            "",
            "LocalDefault",
            "LocalDefault/172.18.0.0",
            "LocalDefault/172.18.0.1/16",
            "LocalDefault/172.18.0.0/16/",
            "LocalDefault/172.18.0.0/16/10.0.0.0/24",
            "Local Default/172.18.0.0/16",
            "../10.0.0.0/8",
            "a/10.0.0.0/8/10.0.0.0/9/x",
            "0123456789abcdef",
        ] {
            assert!(PoolId::parse(bad).is_err(), "{bad}");
        }
        assert!(PoolId::parse("nope").unwrap_err().contains("not a pool id"));
    }

    #[test]
    fn spaces() {
        assert!(validate_space("LocalDefault").is_ok());
        assert!(validate_space("my-space.v2_x").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(65)] {
            assert!(validate_space(bad).is_err(), "{bad}");
        }
    }
}
