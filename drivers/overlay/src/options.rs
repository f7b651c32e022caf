//! `docker network create -o` options of loom-overlay, the network's subnets, and its MTU.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Result};
use ipnetwork::IpNetwork;
use netloom_ipam::VNI_MAX;
use netloom_plugin_api::addressing;
use netloom_plugin_api::options::{OptionReader, IPV6_MIN_MTU, MIN_MTU, MTU};
use netloom_plugin_api::wire::network::IpamData;
use netloom_plugin_api::{PluginError, PluginResult};

use crate::crypt::{WIREGUARD_OVERHEAD_V4, WIREGUARD_OVERHEAD_V6};

pub const VXLANID_LIST: &str = "com.docker.network.driver.overlay.vxlanid_list";
/// Docker's key for an encrypted overlay (`-o encrypted`, value empty or a boolean).
pub const ENCRYPTED: &str = "encrypted";

/// Bytes VXLAN adds to every frame: outer IPv4 (20), UDP (8), VXLAN (8) and inner Ethernet (14).
pub const VXLAN_OVERHEAD: u32 = 50;

/// What the user asked for with `-o`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OverlayOptions {
    /// The network's VNI (`vxlanid_list` with one entry); None: allocated in the store.
    pub vni: Option<u32>,
    /// The containers' MTU; None: the underlay's less the VXLAN (and WireGuard) overhead.
    pub mtu: Option<u32>,
    /// `-o encrypted`: traffic between hosts rides in WireGuard tunnels.
    pub encrypted: bool,
}

impl OverlayOptions {
    pub fn parse(generic: &BTreeMap<String, String>) -> Result<Self> {
        let options = OptionReader::new(generic, &[VXLANID_LIST, MTU, ENCRYPTED], "loom-overlay")?;
        // The MTU's range depends on the underlay and the address families: see overlay_mtu.
        Ok(OverlayOptions {
            vni: options.parsed(VXLANID_LIST, parse_vni_list)?,
            mtu: options.parsed(MTU, parse_mtu)?.flatten(),
            encrypted: options.parsed(ENCRYPTED, parse_encrypted)?.unwrap_or(false),
        })
    }
}

/// Docker's swarm overlay takes `-o encrypted` with no value; a boolean is accepted too.
fn parse_encrypted(value: &str) -> Result<bool> {
    match value {
        "" | "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => bail!("{ENCRYPTED}={value:?} is not understood; use -o {ENCRYPTED} (or =true, =1) to encrypt, =false or =0 not to"),
    }
}

fn parse_vni_list(value: &str) -> Result<u32> {
    let items: Vec<&str> = value.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    match items[..] {
        [one] => parse_vni(one),
        [] => bail!("{VXLANID_LIST} is empty; give one VNI (1-{VNI_MAX}) or leave the option out"),
        _ => bail!(
            "{VXLANID_LIST}={value} names {} VNIs, but a loom-overlay network has one subnet and so one VNI",
            items.len()
        ),
    }
}

pub fn parse_vni(text: &str) -> Result<u32> {
    let vni: u64 = text.parse().map_err(|_| anyhow!("VNI {text:?} is not a number; VXLAN ids are 1-{VNI_MAX}"))?;
    if vni == 0 || vni > u64::from(VNI_MAX) {
        bail!("VNI {vni} is out of range: VXLAN ids are 1-{VNI_MAX}");
    }
    Ok(vni as u32)
}

fn parse_mtu(value: &str) -> Result<Option<u32>> {
    let mtu: u32 = value.trim().parse().map_err(|_| anyhow!("{MTU}={value:?} is not a number"))?;
    // Docker's own convention: 0 means "the default".
    Ok((mtu != 0).then_some(mtu))
}

/// What the underlay carries per frame of an overlay network: VXLAN, and for an encrypted network
/// WireGuard too (more over an IPv6 underlay, whose outer header is larger).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encapsulation {
    pub encrypted: bool,
    pub underlay_v6: bool,
}

impl Encapsulation {
    #[cfg(test)]
    pub const PLAIN: Encapsulation = Encapsulation { encrypted: false, underlay_v6: false };

    /// Bytes WireGuard adds (0 for a plain network).
    pub fn wireguard(self) -> u32 {
        match (self.encrypted, self.underlay_v6) {
            (false, _) => 0,
            (true, false) => WIREGUARD_OVERHEAD_V4,
            (true, true) => WIREGUARD_OVERHEAD_V6,
        }
    }

    /// Bytes the underlay carries on top of a container's packet.
    pub fn overhead(self) -> u32 {
        VXLAN_OVERHEAD + self.wireguard()
    }

    /// What takes the overhead, for messages.
    fn describe(self) -> String {
        match self.encrypted {
            false => format!("VXLAN takes {VXLAN_OVERHEAD} bytes"),
            true => format!(
                "WireGuard takes {} bytes (over {}) and VXLAN {VXLAN_OVERHEAD}",
                self.wireguard(),
                if self.underlay_v6 { "IPv6" } else { "IPv4" }
            ),
        }
    }
}

/// The containers' MTU on an overlay over an underlay link of MTU `underlay`: the one asked for,
/// or the largest that fits once VXLAN (and WireGuard) have added their bytes.
pub fn overlay_mtu(requested: Option<u32>, underlay: u32, ipv6: bool, encap: Encapsulation) -> Result<u32> {
    let minimum = if ipv6 { IPV6_MIN_MTU } else { MIN_MTU };
    let family = if ipv6 { "IPv6" } else { "IPv4" };
    let fits = underlay.saturating_sub(encap.overhead());
    let takes = encap.describe();
    if fits < minimum {
        bail!(
            "the underlay's MTU {underlay} is too small for an overlay: {takes}, leaving {fits}, below {family}'s \
             minimum of {minimum}"
        );
    }
    match requested {
        None => Ok(fits),
        Some(mtu) if mtu < minimum => {
            bail!("{MTU}={mtu} is too small for the overlay: {family} needs at least {minimum} ({takes})")
        }
        Some(mtu) if mtu > fits => bail!(
            "{MTU}={mtu} is too large for the overlay: the underlay's MTU is {underlay} and {takes}, so at most {fits}"
        ),
        Some(mtu) => Ok(mtu),
    }
}

/// The network's one subnet of a family (its gateway stays unused: containers reach the outside
/// through docker_gwbridge).
pub fn single_subnet(data: &[IpamData], family: &str) -> PluginResult<Option<IpNetwork>> {
    match addressing::pools(data, family)?.as_slice() {
        [] => Ok(None),
        [pool] => Ok(Some(pool.subnet)),
        more => Err(PluginError::new(format!(
            "a loom-overlay network has one {family} subnet, got {}; create one network per subnet",
            more.len()
        ))),
    }
}

/// `10.1.0.0/24` → `10.1.0.0_24`, for store keys.
pub fn subnet_key(subnet: &IpNetwork) -> String {
    format!("{}_{}", subnet.network(), subnet.prefix())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> Result<OverlayOptions> {
        OverlayOptions::parse(&pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn options() {
        assert_eq!(opts(&[]).unwrap(), OverlayOptions::default());
        assert_eq!(
            opts(&[(VXLANID_LIST, "5000"), (MTU, "1400")]).unwrap(),
            OverlayOptions { vni: Some(5000), mtu: Some(1400), encrypted: false }
        );
        for (value, on) in [("", true), ("true", true), ("1", true), ("false", false), ("0", false)] {
            assert_eq!(opts(&[(ENCRYPTED, value)]).unwrap().encrypted, on, "encrypted={value:?}");
        }
        assert_eq!(opts(&[(MTU, "0")]).unwrap().mtu, None);
        assert_eq!(opts(&[(VXLANID_LIST, " 4096 ,")]).unwrap().vni, Some(4096));
        for (pairs, text) in [
            (vec![(VXLANID_LIST, "0")], "VNI 0 is out of range"),
            (vec![(VXLANID_LIST, "16777216")], "VNI 16777216 is out of range: VXLAN ids are 1-16777215"),
            (vec![(VXLANID_LIST, "abc")], "not a number"),
            (vec![(VXLANID_LIST, "5000,5001")], "names 2 VNIs"),
            (vec![(VXLANID_LIST, "")], "is empty"),
            (vec![(MTU, "big")], "is not a number"),
            (vec![(ENCRYPTED, "yes")], "encrypted=\"yes\" is not understood; use -o encrypted (or =true, =1)"),
            (vec![(ENCRYPTED, "aes")], "=false or =0 not to"),
            (vec![("com.docker.network.bridge.name", "x")], "unknown option(s) com.docker.network.bridge.name"),
        ] {
            let err = opts(&pairs).unwrap_err().to_string();
            assert!(err.contains(text), "{pairs:?}: {err}");
        }
    }

    #[test]
    fn mtu() {
        let plain = Encapsulation::PLAIN;
        assert_eq!(overlay_mtu(None, 1500, false, plain).unwrap(), 1450);
        assert_eq!(overlay_mtu(None, 9000, true, plain).unwrap(), 8950);
        assert_eq!(overlay_mtu(Some(1400), 1500, false, plain).unwrap(), 1400);
        assert_eq!(overlay_mtu(Some(1450), 1500, false, plain).unwrap(), 1450);
        let err = overlay_mtu(Some(1451), 1500, false, plain).unwrap_err().to_string();
        assert!(err.contains("too large") && err.contains("at most 1450"), "{err}");
        let err = overlay_mtu(Some(60), 1500, false, plain).unwrap_err().to_string();
        assert!(err.contains("too small for the overlay") && err.contains("at least 68"), "{err}");
        let err = overlay_mtu(Some(1200), 1500, true, plain).unwrap_err().to_string();
        assert!(err.contains("IPv6 needs at least 1280"), "{err}");
        let err = overlay_mtu(None, 100, false, plain).unwrap_err().to_string();
        assert!(err.contains("underlay's MTU 100 is too small"), "{err}");
        assert!(overlay_mtu(None, 1300, true, plain).is_err(), "1250 is below IPv6's minimum");
    }

    #[test]
    fn encrypted_mtu() {
        let over_v4 = Encapsulation { encrypted: true, underlay_v6: false };
        let over_v6 = Encapsulation { encrypted: true, underlay_v6: true };
        assert_eq!(over_v4.overhead(), 110);
        assert_eq!(over_v6.overhead(), 130);
        assert_eq!(overlay_mtu(None, 1500, false, over_v4).unwrap(), 1390);
        assert_eq!(overlay_mtu(None, 1500, false, over_v6).unwrap(), 1370);
        assert_eq!(overlay_mtu(Some(1390), 1500, false, over_v4).unwrap(), 1390);
        assert_eq!(overlay_mtu(Some(1000), 1500, false, over_v4).unwrap(), 1000);
        let err = overlay_mtu(Some(1391), 1500, false, over_v4).unwrap_err().to_string();
        assert!(
            err.contains("at most 1390") && err.contains("WireGuard takes 60") && err.contains("VXLAN 50"),
            "{err}"
        );
        let err = overlay_mtu(Some(1371), 1500, false, over_v6).unwrap_err().to_string();
        assert!(err.contains("at most 1370") && err.contains("WireGuard takes 80 bytes (over IPv6)"), "{err}");
        let err = overlay_mtu(Some(60), 1500, false, over_v4).unwrap_err().to_string();
        assert!(err.contains("at least 68") && err.contains("WireGuard takes 60"), "{err}");
        // IPv6 inside: 1280 at least, which a 1500 underlay with WireGuard over IPv6 still gives.
        let err = overlay_mtu(Some(1279), 1500, true, over_v6).unwrap_err().to_string();
        assert!(err.contains("IPv6 needs at least 1280"), "{err}");
        let err = overlay_mtu(None, 1400, true, over_v6).unwrap_err().to_string();
        assert!(err.contains("underlay's MTU 1400 is too small") && err.contains("leaving 1270"), "{err}");
        // A plain network on the same underlay keeps its MTU.
        assert_eq!(overlay_mtu(None, 1400, true, Encapsulation::PLAIN).unwrap(), 1350);
    }

    #[test]
    fn pools_and_keys() {
        let pool = |p: &str| IpamData { pool: p.into(), ..IpamData::default() };
        assert_eq!(single_subnet(&[], "IPv6").unwrap(), None);
        let subnet = single_subnet(&[pool("10.9.0.0/24")], "IPv4").unwrap().unwrap();
        assert_eq!(subnet_key(&subnet), "10.9.0.0_24");
        assert_eq!(subnet_key(&"fd00:9::/64".parse().unwrap()), "fd00:9::_64");
        assert!(single_subnet(&[pool("x")], "IPv4").unwrap_err().to_string().contains("not a CIDR"));
        let err = single_subnet(&[pool("10.9.0.0/24"), pool("10.8.0.0/24")], "IPv4").unwrap_err().to_string();
        assert!(err.contains("one IPv4 subnet, got 2"), "{err}");
    }
}
