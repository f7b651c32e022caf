//! Evidence for attack scenarios: named nftables counters in a namespace the scenario made (a
//! host, or a container on one), and the number of answers a probe got. A scenario counts what
//! got through instead of trusting that a command failed for the right reason.

use std::collections::BTreeMap;
use std::fs;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};

use crate::Host;

/// A table of named counters (`counter <name> {}`), its chains given by the scenario, in one
/// network namespace on a host. It lives as long as that namespace (the scenario's).
pub struct NftCounters<'h> {
    host: &'h Host,
    /// `nsenter ... --` to reach a container's namespace; empty for the host's own.
    enter: Vec<String>,
    family: String,
    table: String,
}

impl<'h> NftCounters<'h> {
    /// `table <family> <table> { counter <c> {} ...; <chains> }` in the host's namespace.
    pub fn in_host(host: &'h Host, family: &str, table: &str, counters: &[&str], chains: &str) -> Result<Self> {
        Self::install(host, Vec::new(), family, table, counters, chains)
    }

    /// The same in the network namespace of `container` on `host` (e.g. a `netdev` ingress hook on
    /// its eth0).
    pub fn in_container(
        host: &'h Host,
        container: &str,
        family: &str,
        table: &str,
        counters: &[&str],
        chains: &str,
    ) -> Result<Self> {
        let pid = host.container_pid(container)?.to_string();
        let enter = ["nsenter", "-t", pid.as_str(), "-n", "--"].map(String::from).to_vec();
        Self::install(host, enter, family, table, counters, chains)
    }

    fn install(
        host: &'h Host,
        enter: Vec<String>,
        family: &str,
        table: &str,
        counters: &[&str],
        chains: &str,
    ) -> Result<Self> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let mut text = format!("table {family} {table} {{\n");
        for c in counters {
            text.push_str(&format!("  counter {c} {{}}\n"));
        }
        text.push_str(chains);
        text.push_str("\n}\n");
        // The host's mount namespace sees the scenario dir, so nft reads the script from there.
        let file = host.dir().join(format!("nft-{table}-{}.nft", SEQ.fetch_add(1, Ordering::SeqCst)));
        fs::write(&file, &text)?;
        let me = NftCounters { host, enter, family: family.to_owned(), table: table.to_owned() };
        me.nft(&["-f", &file.display().to_string()]).with_context(|| format!("installing counters:\n{text}"))?;
        Ok(me)
    }

    fn nft(&self, args: &[&str]) -> Result<String> {
        let mut argv = self.enter.clone();
        argv.push("nft".into());
        argv.extend(args.iter().map(|a| a.to_string()));
        self.host.exec(&argv)
    }

    /// Packets counted so far by every counter of the table.
    pub fn read(&self) -> Result<BTreeMap<String, u64>> {
        let out = self.nft(&["-j", "list", "counters", "table", &self.family, &self.table])?;
        let json: serde_json::Value = serde_json::from_str(&out).with_context(|| format!("nft -j: {out}"))?;
        let mut counts = BTreeMap::new();
        for item in json["nftables"].as_array().into_iter().flatten() {
            let c = &item["counter"];
            if let (Some(name), Some(packets)) = (c["name"].as_str(), c["packets"].as_u64()) {
                counts.insert(name.to_owned(), packets);
            }
        }
        Ok(counts)
    }

    /// Packets counted so far by one counter.
    pub fn get(&self, name: &str) -> Result<u64> {
        match self.read()?.get(name) {
            Some(n) => Ok(*n),
            None => bail!("no counter {name} in table {} {}", self.family, self.table),
        }
    }
}

/// The replies a `ping` reported ("N packets received"), 0 when it could not even send (no
/// route): run it with `; true` so that a ping without answers still gives its summary.
pub fn ping_replies(output: &str) -> u32 {
    output
        .lines()
        .find_map(|l| {
            let (_, rest) = l.split_once("transmitted, ")?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::ping_replies;

    #[test]
    fn ping_summary() {
        let out = "PING 10.0.0.1 (10.0.0.1): 56 data bytes\n\n--- 10.0.0.1 ping statistics ---\n3 packets transmitted, 2 packets received, 33% packet loss\n";
        assert_eq!(ping_replies(out), 2);
        assert_eq!(ping_replies("ping: sendto: Network unreachable\n"), 0);
    }
}
