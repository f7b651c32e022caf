//! `-o` options of a loom-host network, under Docker's own keys.

use std::collections::BTreeMap;

use anyhow::Result;
use netloom_plugin_api::options::{OptionReader, MTU};
use serde::{Deserialize, Serialize};

/// Docker's bridge key; off by default here: host-routed addresses are usually routable.
pub const ENABLE_IP_MASQUERADE: &str = "com.docker.network.bridge.enable_ip_masquerade";

const KNOWN: &[&str] = &[ENABLE_IP_MASQUERADE, MTU];

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HostOptions {
    /// Masquerade the containers' traffic leaving the host.
    pub masquerade: bool,
    /// None: the kernel's default (1500).
    pub mtu: Option<u32>,
}

impl HostOptions {
    pub fn parse(generic: &BTreeMap<String, String>) -> Result<Self> {
        let o = OptionReader::new(generic, KNOWN, "loom-host")?;
        Ok(Self { masquerade: o.bool(ENABLE_IP_MASQUERADE, false)?, mtu: o.mtu()? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> Result<HostOptions> {
        HostOptions::parse(&pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn defaults_are_no_nat_and_kernel_mtu() {
        assert_eq!(opts(&[]).unwrap(), HostOptions { masquerade: false, mtu: None });
    }

    #[test]
    fn docker_keys_are_read() {
        let o = opts(&[(ENABLE_IP_MASQUERADE, "true"), (MTU, "1400")]).unwrap();
        assert_eq!(o, HostOptions { masquerade: true, mtu: Some(1400) });
        assert_eq!(opts(&[(MTU, "0")]).unwrap().mtu, None);
    }

    #[test]
    fn bad_values_name_the_key_and_value() {
        for (pairs, expected) in [
            (vec![(ENABLE_IP_MASQUERADE, "yes")], "enable_ip_masquerade=\"yes\" is not a boolean"),
            (vec![(MTU, "9x")], "not a number"),
            (vec![(MTU, "30")], "out of range"),
            (
                vec![("com.docker.network.bridge.name", "br0")],
                "unknown option(s) com.docker.network.bridge.name; loom-host understands",
            ),
        ] {
            let err = format!("{:#}", opts(&pairs).unwrap_err());
            assert!(err.contains(expected), "{pairs:?}: {err}");
        }
    }
}
