//! The one iptables rule the nftables backend needs: accept, in iptables' filter FORWARD, the
//! packets its own forward chain accepted (they carry [`FORWARD_MARK`]). See the crate doc.

use anyhow::{anyhow, Result};
use tracing::{debug, warn};

use crate::tag;

/// Mark bit set by the nftables backend on forwarded packets it accepts; the compat rule in
/// iptables' FORWARD accepts packets carrying it.
pub const FORWARD_MARK: u32 = 0x1000_0000;

fn spec() -> String {
    let m = FORWARD_MARK;
    format!("-m mark --mark {m:#x}/{m:#x} -m comment --comment {} -j ACCEPT", tag::IPT_COMPAT)
}

/// The `iptables` handles of the wanted families that exist here.
fn handles(v4: bool, v6: bool) -> Vec<crate::iptables::Xtables> {
    [(false, v4), (true, v6)]
        .into_iter()
        .filter(|(_, wanted)| *wanted)
        .filter_map(|(is_v6, _)| crate::iptables::handle(is_v6).ok())
        .collect()
}

/// Inserts the compat rule at the top of FORWARD (after dockerd's `-j DOCKER-USER`) in
/// iptables (`v4`) and/or ip6tables (`v6`), unless present. Without the binary there is no iptables FORWARD to get past: nothing to do.
/// (Only the families a network uses: an IPv4-only host gets no ip6tables filter table.)
pub(crate) fn ensure(v4: bool, v6: bool) -> Result<()> {
    let spec = spec();
    for ipt in handles(v4, v6) {
        let present =
            ipt.exists("filter", "FORWARD", &spec).map_err(|e| anyhow!("{} -C FORWARD {spec}: {e}", ipt.cmd))?;
        if present {
            continue;
        }
        debug!(cmd = ipt.cmd, "inserting the FORWARD compat rule");
        let position = crate::iptables::forward_top(&ipt)?;
        if let Err(e) = ipt.insert("filter", "FORWARD", &spec, position) {
            if ipt.cmd == "ip6tables" {
                // IPv6 may be disabled in this kernel or namespace; IPv4 is what matters most.
                warn!("ip6tables -I FORWARD 1 {spec}: {e}");
            } else {
                return Err(anyhow!("{} -I FORWARD 1 {spec}: {e}", ipt.cmd));
            }
        }
    }
    Ok(())
}

/// Deletes every copy of the compat rule.
pub(crate) fn remove() -> Result<()> {
    let spec = spec();
    for ipt in handles(true, true) {
        ipt.delete_all("filter", "FORWARD", &spec).map_err(|e| anyhow!("{} -D FORWARD {spec}: {e}", ipt.cmd))?;
    }
    Ok(())
}
