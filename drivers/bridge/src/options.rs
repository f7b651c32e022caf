//! `-o` options of a loom-bridge network, under Docker's own keys.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use anyhow::{anyhow, bail, Context, Result};
use netloom_dataplane::names;
use netloom_plugin_api::options::{OptionReader, MTU};

pub const BRIDGE_NAME: &str = "com.docker.network.bridge.name";
pub const ENABLE_ICC: &str = "com.docker.network.bridge.enable_icc";
pub const ENABLE_IP_MASQUERADE: &str = "com.docker.network.bridge.enable_ip_masquerade";
pub const HOST_BINDING_IPV4: &str = "com.docker.network.bridge.host_binding_ipv4";
pub const INHIBIT_IPV4: &str = "com.docker.network.bridge.inhibit_ipv4";
pub const IFACE_PREFIX: &str = "com.docker.network.container_iface_prefix";
pub const HOST_IPV4: &str = "com.docker.network.host_ipv4";
/// netloom's own: `false` keeps all traffic between the network's containers on the bridge
/// (through br_netfilter, where the host's FORWARD rules see it), as Docker's bridge does.
pub const FAST_PATH: &str = "fast_path";

const KNOWN: &[&str] = &[
    BRIDGE_NAME,
    ENABLE_ICC,
    ENABLE_IP_MASQUERADE,
    HOST_BINDING_IPV4,
    INHIBIT_IPV4,
    MTU,
    IFACE_PREFIX,
    HOST_IPV4,
    FAST_PATH,
];

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BridgeOptions {
    /// None: derived from the network id.
    pub bridge_name: Option<String>,
    pub icc: bool,
    pub masquerade: bool,
    /// Default host address for `-p` without an address.
    pub host_binding_ipv4: Option<Ipv4Addr>,
    /// Don't put the IPv4 gateway on the bridge.
    pub inhibit_ipv4: bool,
    /// None: the kernel's default (1500).
    pub mtu: Option<u32>,
    pub iface_prefix: String,
    /// SNAT to this address instead of masquerading.
    pub snat_source: Option<IpAddr>,
    /// Frames between the network's endpoints bypass the bridge (with icc only).
    #[serde(default = "on")]
    pub fast_path: bool,
}

/// What records written before the fast path existed get.
fn on() -> bool {
    true
}

impl Default for BridgeOptions {
    fn default() -> Self {
        Self {
            bridge_name: None,
            icc: true,
            masquerade: true,
            host_binding_ipv4: None,
            inhibit_ipv4: false,
            mtu: None,
            iface_prefix: "eth".to_string(),
            snat_source: None,
            fast_path: true,
        }
    }
}

impl BridgeOptions {
    pub fn parse(generic: &BTreeMap<String, String>) -> Result<Self> {
        let o = OptionReader::new(generic, KNOWN, "loom-bridge")?;
        let defaults = Self::default();
        Ok(Self {
            bridge_name: o.parsed(BRIDGE_NAME, parse_bridge_name)?,
            icc: o.bool(ENABLE_ICC, defaults.icc)?,
            masquerade: o.bool(ENABLE_IP_MASQUERADE, defaults.masquerade)?,
            host_binding_ipv4: o.parsed(HOST_BINDING_IPV4, parse_host_binding)?.flatten(),
            inhibit_ipv4: o.bool(INHIBIT_IPV4, defaults.inhibit_ipv4)?,
            mtu: o.mtu()?,
            iface_prefix: o.parsed(IFACE_PREFIX, parse_iface_prefix)?.unwrap_or(defaults.iface_prefix),
            snat_source: o.parsed(HOST_IPV4, parse_host_ipv4)?,
            fast_path: o.bool(FAST_PATH, defaults.fast_path)?,
        })
    }
}

fn parse_bridge_name(value: &str) -> Result<String> {
    names::validate(value).with_context(|| format!("invalid {BRIDGE_NAME}"))?;
    Ok(value.to_string())
}

/// None for 0.0.0.0: every address, as without the option.
fn parse_host_binding(value: &str) -> Result<Option<Ipv4Addr>> {
    let key = HOST_BINDING_IPV4;
    match value.parse().map_err(|_| anyhow!("{key}={value:?} is not an IP address"))? {
        IpAddr::V4(v4) => Ok((!v4.is_unspecified()).then_some(v4)),
        IpAddr::V6(_) => bail!("{key}={value:?} must be an IPv4 address"),
    }
}

fn parse_host_ipv4(value: &str) -> Result<IpAddr> {
    let ip: Ipv4Addr = value.parse().map_err(|_| anyhow!("{HOST_IPV4}={value:?} is not an IPv4 address"))?;
    Ok(IpAddr::V4(ip))
}

fn parse_iface_prefix(value: &str) -> Result<String> {
    if value.is_empty() || value.len() > 10 || !value.chars().all(|c| c.is_ascii_alphanumeric()) {
        bail!("{IFACE_PREFIX}={value:?}: use 1 to 10 letters or digits, e.g. \"eth\"");
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_from_before_the_fast_path_get_it() {
        let mut old = serde_json::to_value(BridgeOptions { fast_path: false, ..BridgeOptions::default() }).unwrap();
        old.as_object_mut().unwrap().remove("fast_path");
        assert!(serde_json::from_value::<BridgeOptions>(old).unwrap().fast_path);
    }

    fn opts(pairs: &[(&str, &str)]) -> Result<BridgeOptions> {
        BridgeOptions::parse(&pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn defaults_match_docker() {
        let o = opts(&[]).unwrap();
        assert!(o.icc && o.masquerade && !o.inhibit_ipv4 && o.fast_path);
        assert_eq!((o.mtu, o.bridge_name, o.iface_prefix.as_str()), (None, None, "eth"));
    }

    #[test]
    fn docker_keys_are_read() {
        let o = opts(&[
            (BRIDGE_NAME, "br-test"),
            (ENABLE_ICC, "false"),
            (ENABLE_IP_MASQUERADE, "0"),
            (HOST_BINDING_IPV4, "127.0.0.1"),
            (MTU, "1400"),
            (HOST_IPV4, "192.0.2.7"),
            (FAST_PATH, "false"),
        ])
        .unwrap();
        assert!(!o.fast_path);
        assert_eq!(o.bridge_name.as_deref(), Some("br-test"));
        assert!(!o.icc && !o.masquerade);
        assert_eq!(o.host_binding_ipv4, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(o.mtu, Some(1400));
        assert_eq!(o.snat_source, Some("192.0.2.7".parse().unwrap()));
        assert_eq!(opts(&[(MTU, "0")]).unwrap().mtu, None);
        assert_eq!(opts(&[(HOST_BINDING_IPV4, "0.0.0.0")]).unwrap().host_binding_ipv4, None);
    }

    #[test]
    fn bad_values_name_the_key_and_value() {
        for (pairs, expected) in [
            (vec![(MTU, "big")], "not a number"),
            (vec![(MTU, "70000")], "out of range"),
            (vec![(MTU, "-1")], "not a number"),
            (vec![(MTU, "20")], "out of range"),
            (vec![(BRIDGE_NAME, "this-name-is-too-long")], "at most 15"),
            (vec![(BRIDGE_NAME, "br/0")], "'/'"),
            (vec![(ENABLE_ICC, "yes")], "not a boolean"),
            (vec![(HOST_BINDING_IPV4, "::1")], "must be an IPv4"),
            (vec![(HOST_BINDING_IPV4, "localhost")], "not an IP"),
            (
                vec![("com.docker.network.bridge.enable_icc_typo", "true")],
                "unknown option(s) com.docker.network.bridge.enable_icc_typo",
            ),
            (vec![(IFACE_PREFIX, "e-th")], "letters or digits"),
            (vec![(FAST_PATH, "maybe")], "not a boolean"),
        ] {
            let err = format!("{:#}", opts(&pairs).unwrap_err());
            assert!(err.contains(expected), "{pairs:?}: {err}");
        }
    }
}
