//! `-o` options of a loom-macvlan network: Docker's macvlan keys plus the driver MTU.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use netloom_dataplane::{names, MacVlanMode, VLAN_IDS};
use netloom_plugin_api::options::{OptionReader, MTU};
use serde::{Deserialize, Serialize};

pub const PARENT: &str = "parent";
pub const MODE: &str = "macvlan_mode";

const KNOWN: &[&str] = &[PARENT, MODE, MTU];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Containers on the same parent talk to each other directly.
    #[default]
    Bridge,
    /// No traffic between containers on the same parent, not even through an outside switch.
    Private,
    /// Traffic between containers on the same parent goes out to the switch (which must hairpin).
    Vepa,
    /// One container takes over the parent (one network per parent).
    Passthru,
}

impl Mode {
    fn parse(value: &str) -> Result<Self> {
        Ok(match value.trim() {
            "" | "bridge" => Mode::Bridge,
            "private" => Mode::Private,
            "vepa" => Mode::Vepa,
            "passthru" => Mode::Passthru,
            other => bail!("{MODE}={other:?} is not a macvlan mode; use bridge, private, vepa or passthru"),
        })
    }

    pub fn kernel(self) -> MacVlanMode {
        match self {
            Mode::Bridge => MacVlanMode::Bridge,
            Mode::Private => MacVlanMode::Private,
            Mode::Vepa => MacVlanMode::Vepa,
            Mode::Passthru => MacVlanMode::Passthrough,
        }
    }
}

/// `parent=` as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentName {
    pub name: String,
    /// `eth0.50`: the base interface and the VLAN id, for creating the sub-interface when absent.
    pub vlan: Option<(String, u16)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MacvlanOptions {
    /// None: the network gets an isolated parent of its own.
    pub parent: Option<ParentName>,
    pub mode: Mode,
    /// None: the parent's MTU.
    pub mtu: Option<u32>,
}

impl MacvlanOptions {
    pub fn parse(generic: &BTreeMap<String, String>) -> Result<Self> {
        let o = OptionReader::new(generic, KNOWN, "loom-macvlan")?;
        Ok(Self {
            parent: o.parsed(PARENT, parse_parent)?.flatten(),
            mode: o.parsed(MODE, Mode::parse)?.unwrap_or_default(),
            mtu: o.mtu()?,
        })
    }
}

/// None for an empty `parent=`: an isolated parent, as without the option.
fn parse_parent(value: &str) -> Result<Option<ParentName>> {
    if value.is_empty() {
        return Ok(None);
    }
    names::validate(value).with_context(|| format!("invalid {PARENT}={value:?}"))?;
    if value == "lo" {
        bail!("{PARENT}=lo: the loopback interface cannot carry macvlan links; name the host interface on the segment");
    }
    let vlan = match value.rsplit_once('.') {
        Some((base, id)) if !base.is_empty() && !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) => {
            let id: u32 = id.parse().unwrap_or(u32::MAX);
            match u16::try_from(id) {
                Ok(id) if VLAN_IDS.contains(&id) => Some((base.to_string(), id)),
                _ => bail!("{PARENT}={value}: VLAN id {id} is out of range; use 1 to 4094"),
            }
        }
        _ => None,
    };
    Ok(Some(ParentName { name: value.to_string(), vlan }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> Result<MacvlanOptions> {
        MacvlanOptions::parse(&pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn defaults_match_docker() {
        let o = opts(&[]).unwrap();
        assert_eq!((o.parent, o.mode, o.mtu), (None, Mode::Bridge, None));
        assert_eq!(opts(&[(PARENT, "")]).unwrap().parent, None);
    }

    #[test]
    fn parents_modes_and_mtu() {
        let o = opts(&[(PARENT, "eth0"), (MODE, "private"), (MTU, "1400")]).unwrap();
        assert_eq!(o.parent, Some(ParentName { name: "eth0".into(), vlan: None }));
        assert_eq!((o.mode, o.mtu), (Mode::Private, Some(1400)));
        let o = opts(&[(PARENT, "eth0.50")]).unwrap();
        assert_eq!(o.parent.unwrap().vlan, Some(("eth0".into(), 50)));
        let o = opts(&[(PARENT, "bond0.4094"), (MODE, "passthru")]).unwrap();
        assert_eq!(o.parent.unwrap().vlan, Some(("bond0".into(), 4094)));
        assert_eq!(o.mode.kernel(), MacVlanMode::Passthrough);
        assert_eq!(opts(&[(PARENT, "br.lan")]).unwrap().parent.unwrap().vlan, None, "not a VLAN name");
        for (text, mode) in
            [("bridge", MacVlanMode::Bridge), ("vepa", MacVlanMode::Vepa), ("private", MacVlanMode::Private)]
        {
            assert_eq!(opts(&[(MODE, text)]).unwrap().mode.kernel(), mode);
        }
    }

    #[test]
    fn bad_values_name_the_key_and_value() {
        for (pairs, expected) in [
            (vec![(PARENT, "eth0.0")], "parent=eth0.0: VLAN id 0 is out of range; use 1 to 4094"),
            (vec![(PARENT, "eth0.4095")], "VLAN id 4095 is out of range"),
            (vec![(PARENT, "e.99999999999")], "is out of range"),
            (vec![(PARENT, "lo")], "parent=lo: the loopback interface"),
            (vec![(PARENT, "a-very-long-interface")], "at most 15"),
            (vec![(PARENT, "eth0:1")], "':'"),
            (vec![(MODE, "l2")], "macvlan_mode=\"l2\" is not a macvlan mode"),
            (vec![(MTU, "huge")], "not a number"),
            (
                vec![("ipvlan_mode", "l2")],
                "unknown option(s) ipvlan_mode; loom-macvlan understands parent, macvlan_mode",
            ),
        ] {
            let err = format!("{:#}", opts(&pairs).unwrap_err());
            assert!(err.contains(expected), "{pairs:?}: {err}");
        }
    }
}
