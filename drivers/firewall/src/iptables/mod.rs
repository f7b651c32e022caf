//! The iptables backend: the `iptables`/`ip6tables` binaries, every call bounded (`--wait` with a
//! limit, and a process timeout: [`xtables`]). Layout and rules: [`rules`].
//!
//! Each call runs the binaries on tokio's blocking pool; calls are serialised within the process.
//! Rules are found again by their `netloom:…` comments, so nothing is kept in memory.

mod rules;
pub(crate) mod sweep;
mod xtables;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use async_trait::async_trait;
use tracing::{debug, warn};

use crate::error::FirewallError;
use crate::firewall::Firewall;
use crate::model::BackendKind;
use crate::model::{check_ports, check_vxlan_port, NetworkPolicy, PortMapping};
use crate::tag::{self, IptOwner};
use rules::{IptRule, ListedRule, Position};

use rules::parse_listed;
pub(crate) use xtables::Xtables;

pub struct IptablesFirewall {
    inner: Arc<Inner>,
}

struct Inner {
    v4: Xtables,
    /// `None` when `ip6tables` is missing or unusable; IPv6 networks then fail.
    v6: Option<Xtables>,
    lock: Mutex<()>,
}

fn ipt_err(what: String) -> impl FnOnce(Box<dyn std::error::Error>) -> anyhow::Error {
    move |e| anyhow!("{what}: {e}")
}

/// The IPv4 handle, with the filter table probed so that a missing kernel module or binary
/// shows up at start.
fn probed_v4() -> Result<Xtables> {
    let v4 = handle(false)?;
    let out = v4.execute("filter", "-S FORWARD").map_err(ipt_err("iptables -S FORWARD".into()))?;
    if !out.status.success() {
        bail!("iptables -S FORWARD: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(v4)
}

/// The `iptables` handle of one family, checked to run.
pub(crate) fn handle(v6: bool) -> Result<Xtables> {
    let ipt = Xtables::new(v6);
    ipt.version().map_err(ipt_err(format!("running {} --version", ipt.cmd)))?;
    Ok(ipt)
}

impl IptablesFirewall {
    pub async fn open() -> Result<Self> {
        let inner = tokio::task::spawn_blocking(|| -> Result<Inner> {
            // Each probe is two iptables processes (`--version`, `-S FORWARD`); the families are
            // probed side by side, which takes a third off the driver's start-up.
            // The loopback guard goes in at once, whether or not a network ever comes.
            let (v4, v6) = std::thread::scope(|s| {
                let v6 = s.spawn(|| {
                    let h = usable_v6()?;
                    if let Err(e) = ensure_table_skeleton(&h, "raw") {
                        warn!("installing the IPv6 loopback guard: {e:#}");
                    }
                    Some(h)
                });
                let v4 = probed_v4().and_then(|h| {
                    ensure_table_skeleton(&h, "raw").context("installing the loopback guard")?;
                    Ok(h)
                });
                (v4, v6.join().unwrap_or(None))
            });
            let v4 = v4?;
            if v6.is_none() {
                warn!("ip6tables is not usable; IPv6 subnets and ports will be refused");
            }
            Ok(Inner { v4, v6, lock: Mutex::new(()) })
        })
        .await??;
        Ok(Self { inner: Arc::new(inner) })
    }

    async fn run<T: Send + 'static>(&self, f: impl FnOnce(&Inner) -> Result<T> + Send + 'static) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let _guard = inner.lock.lock().unwrap_or_else(|e| e.into_inner());
            f(&inner)
        })
        .await?
    }
}

/// The IPv6 handle when `ip6tables` runs and has a filter table here.
fn usable_v6() -> Option<Xtables> {
    handle(true).ok().filter(|h| h.execute("filter", "-S FORWARD").map(|o| o.status.success()).unwrap_or(false))
}

impl Inner {
    /// The families whose `tables` can be listed here, with every rule of those tables, and
    /// nothing installed (a sweep must not leave a loopback guard behind); `None` where
    /// `iptables` does not run. One round of listings side by side, no probes first: this is on
    /// every driver's start-up path.
    fn unguarded_listing(tables: &[&'static str]) -> Option<(Inner, Vec<ListedRule>)> {
        let families = [Xtables::new(false), Xtables::new(true)];
        let [v4, v6] = std::thread::scope(|s| {
            let running = families
                .each_ref()
                .map(|ipt| tables.iter().map(|t| s.spawn(move || listed_with_chains(ipt, t))).collect::<Vec<_>>());
            running.map(|listings| {
                listings.into_iter().map(|t| t.join().ok()?.ok().map(|(_, rules)| rules)).collect::<Option<Vec<_>>>()
            })
        });
        let [v4_handle, v6_handle] = families;
        let mut rules: Vec<ListedRule> = v4?.into_iter().flatten().collect();
        let v6_handle = match v6 {
            Some(v6) => {
                rules.extend(v6.into_iter().flatten());
                Some(v6_handle)
            }
            None => None,
        };
        Some((Inner { v4: v4_handle, v6: v6_handle, lock: Mutex::new(()) }, rules))
    }

    fn family(&self, v6: bool) -> Result<&Xtables> {
        if v6 {
            self.v6.as_ref().ok_or_else(|| anyhow!("ip6tables is not usable here"))
        } else {
            Ok(&self.v4)
        }
    }

    /// The families whose tables are usable.
    fn families(&self) -> Vec<(bool, &Xtables)> {
        let mut out = vec![(false, &self.v4)];
        if let Some(v6) = &self.v6 {
            out.push((true, v6));
        }
        out
    }

    fn delete(&self, ipt: &Xtables, table: &str, chain: &str, spec: &str) -> Result<()> {
        debug!(cmd = ipt.cmd, table, chain, spec, "deleting");
        ipt.delete(table, chain, spec).map_err(ipt_err(format!("{} -t {table} -D {chain} {spec}", ipt.cmd)))
    }

    /// Creates netloom's chains and the skeleton rules of one family (idempotent).
    fn ensure_skeleton(&self, ipt: &Xtables) -> Result<()> {
        for table in SKELETON_TABLES {
            ensure_table_skeleton(ipt, table)?;
        }
        Ok(())
    }

    /// Every rule of a table, parsed.
    fn listed(&self, ipt: &Xtables, table: &str) -> Result<Vec<ListedRule>> {
        Ok(listed_with_chains(ipt, table)?.1)
    }

    /// Every rule of `tables` in every usable family. The listings run side by side: this is on
    /// every driver's start-up path (leftover check, sweep), one iptables process each.
    fn listed_everywhere(&self, tables: &[&'static str]) -> Result<Vec<ListedRule>> {
        let tables: Vec<(&Xtables, &str)> =
            self.families().into_iter().flat_map(|(_, ipt)| tables.iter().map(move |t| (ipt, *t))).collect();
        let listings: Vec<Result<Vec<ListedRule>>> = std::thread::scope(|s| {
            let running: Vec<_> = tables.iter().map(|&(ipt, table)| s.spawn(move || self.listed(ipt, table))).collect();
            running
                .into_iter()
                .map(|t| t.join().unwrap_or_else(|_| Err(anyhow!("listing iptables rules panicked"))))
                .collect()
        });
        let mut all = Vec::new();
        for listing in listings {
            all.extend(listing?);
        }
        Ok(all)
    }
}

/// The tables netloom's skeleton has rules in.
const SKELETON_TABLES: [&str; 3] = ["raw", "filter", "nat"];
/// The tables networks and published ports have rules in.
const NETWORK_TABLES: [&str; 2] = ["filter", "nat"];
/// Every table netloom has rules in (the VXLAN guard's too).
const ALL_TABLES: [&str; 4] = ["raw", "mangle", "filter", "nat"];

/// The chains (`-N`/`-P` lines) and rules of a table.
fn listed_with_chains(ipt: &Xtables, table: &str) -> Result<(Vec<String>, Vec<ListedRule>)> {
    let out = ipt.execute(table, "-S").map_err(ipt_err(format!("{} -t {table} -S", ipt.cmd)))?;
    if !out.status.success() {
        bail!("{} -t {table} -S: {}", ipt.cmd, String::from_utf8_lossy(&out.stderr).trim());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let chains = text
        .lines()
        .filter_map(|l| l.strip_prefix("-N ").or_else(|| l.strip_prefix("-P ")))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    Ok((chains, text.lines().filter_map(parse_listed).collect()))
}

fn is_vxlan(rule: &ListedRule) -> bool {
    rule.comment.as_deref() == Some(tag::IPT_VXLAN)
}

fn delete_listed(ipt: &Xtables, table: &str, rule: &ListedRule) -> Result<()> {
    debug!(cmd = ipt.cmd, table, chain = %rule.chain, spec = %rule.spec, "deleting");
    ipt.delete(table, &rule.chain, &rule.spec)
        .map_err(ipt_err(format!("{} -t {table} -D {} {}", ipt.cmd, rule.chain, rule.spec)))
}

fn same_rule(listed: &ListedRule, rule: &IptRule) -> bool {
    listed.chain == rule.chain && rules::normalized(&listed.spec) == rules::normalized(&rule.spec_string())
}

/// Makes one family's VXLAN guard accept exactly `peers` on `port`. New peers and the new jump
/// go in before anything old is deleted, so no member is dropped in between.
fn set_vxlan(ipt: &Xtables, port: u16, peers: &[IpAddr]) -> Result<()> {
    let wanted = rules::vxlan_rules(port, peers);
    let (chains, raw) = listed_with_chains(ipt, "raw")?;
    if !chains.iter().any(|c| c == rules::VXLAN) {
        if let Err(e) = ipt.new_chain("raw", rules::VXLAN) {
            if !ipt.chain_exists("raw", rules::VXLAN).unwrap_or(false) {
                bail!("{} -t raw -N {}: {e}", ipt.cmd, rules::VXLAN);
            }
        }
    }
    let in_chain: Vec<&ListedRule> = raw.iter().filter(|r| r.chain == rules::VXLAN).collect();
    let have: BTreeSet<IpAddr> = in_chain.iter().filter_map(|r| rules::parse_vxlan_peer(&r.spec)).collect();
    for (peer, rule) in peers.iter().zip(&wanted.peers) {
        if !have.contains(peer) {
            add_rule(ipt, rule)?;
        }
    }
    if !in_chain.iter().any(|r| same_rule(r, &wanted.drop)) {
        add_rule(ipt, &wanted.drop)?;
    }
    let jumps: Vec<&ListedRule> = raw.iter().filter(|r| r.chain == "PREROUTING" && is_vxlan(r)).collect();
    if !jumps.iter().any(|r| same_rule(r, &wanted.jump)) {
        add_rule(ipt, &wanted.jump)?;
    }
    for old in jumps.iter().filter(|r| !same_rule(r, &wanted.jump)) {
        delete_listed(ipt, "raw", old)?;
    }
    for old in in_chain.iter().filter(|r| rules::parse_vxlan_peer(&r.spec).is_some_and(|p| !peers.contains(&p))) {
        delete_listed(ipt, "raw", old)?;
    }
    let (_, mangle) = listed_with_chains(ipt, "mangle")?;
    let drops: Vec<&ListedRule> = mangle.iter().filter(|r| r.chain == "FORWARD" && is_vxlan(r)).collect();
    if !drops.iter().any(|r| same_rule(r, &wanted.forward)) {
        add_rule(ipt, &wanted.forward)?;
    }
    for old in drops.iter().filter(|r| !same_rule(r, &wanted.forward)) {
        delete_listed(ipt, "mangle", old)?;
    }
    Ok(())
}

/// Deletes one family's VXLAN guard (jump, chain, FORWARD drop).
fn remove_vxlan(ipt: &Xtables) -> Result<()> {
    for table in ["raw", "mangle"] {
        let (_, listed) = listed_with_chains(ipt, table)?;
        for rule in listed.iter().filter(|r| is_vxlan(r) && r.chain != rules::VXLAN) {
            delete_listed(ipt, table, rule)?;
        }
    }
    remove_vxlan_chain(ipt)
}

fn remove_vxlan_chain(ipt: &Xtables) -> Result<()> {
    if ipt.chain_exists("raw", rules::VXLAN).unwrap_or(false) {
        ipt.flush_chain("raw", rules::VXLAN).map_err(ipt_err(format!("{} -t raw -F {}", ipt.cmd, rules::VXLAN)))?;
        ipt.delete_chain("raw", rules::VXLAN).map_err(ipt_err(format!("{} -t raw -X {}", ipt.cmd, rules::VXLAN)))?;
    }
    Ok(())
}

/// Lists one table and adds what of the skeleton is missing there (and replaces outdated
/// skeleton rules).
fn ensure_table_skeleton(ipt: &Xtables, table: &str) -> Result<()> {
    let (chains, listed) = listed_with_chains(ipt, table)?;
    ensure_skeleton_in(ipt, table, &chains, &listed)
}

/// Creates netloom's chains of `table` and adds the skeleton rules missing from `listed`; a
/// skeleton rule of an earlier version (same comment, another spec) is deleted once the current
/// one is in.
fn ensure_skeleton_in(ipt: &Xtables, table: &str, chains: &[String], listed: &[ListedRule]) -> Result<()> {
    for (_, chain) in rules::CHAINS.iter().filter(|(t, _)| *t == table) {
        if !chains.iter().any(|c| c == chain) {
            if let Err(e) = ipt.new_chain(table, chain) {
                // Another process may have created it meanwhile.
                if !ipt.chain_exists(table, chain).unwrap_or(false) {
                    return Err(anyhow!("{} -t {table} -N {chain}: {e}", ipt.cmd));
                }
            }
        }
    }
    let present: BTreeSet<(&str, rules::Normalized)> =
        listed.iter().map(|r| (r.chain.as_str(), rules::normalized(&r.spec))).collect();
    let skeleton: Vec<IptRule> = rules::skeleton(ipt.v6).into_iter().filter(|r| r.table == table).collect();
    for rule in &skeleton {
        if !present.contains(&(rule.chain, rules::normalized(&rule.spec_string()))) {
            add_rule(ipt, rule)?;
        }
    }
    let wanted: BTreeSet<(&str, rules::Normalized)> =
        skeleton.iter().map(|r| (r.chain, rules::normalized(&r.spec_string()))).collect();
    for old in listed.iter().filter(|r| r.comment.as_deref() == Some(tag::IPT_BASE)) {
        if !wanted.contains(&(old.chain.as_str(), rules::normalized(&old.spec))) {
            debug!(cmd = ipt.cmd, table, chain = %old.chain, spec = %old.spec, "replacing an outdated skeleton rule");
            ipt.delete(table, &old.chain, &old.spec)
                .map_err(ipt_err(format!("{} -t {table} -D {} {}", ipt.cmd, old.chain, old.spec)))?;
        }
    }
    Ok(())
}

fn add_rule(ipt: &Xtables, rule: &IptRule) -> Result<()> {
    let spec = rule.spec_string();
    let res = match rule.position {
        Position::Append => ipt.append(rule.table, rule.chain, &spec),
        Position::First if rule.table == "filter" && rule.chain == "FORWARD" => {
            ipt.insert(rule.table, rule.chain, &spec, forward_top(ipt)?)
        }
        Position::First => ipt.insert(rule.table, rule.chain, &spec, 1),
    };
    debug!(cmd = ipt.cmd, rule = %rule.render(), "adding");
    res.map_err(ipt_err(format!("{} {}", ipt.cmd, rule.render())))
}

impl Inner {
    /// Deletes the rules of `tables` whose owner `pred` picks; returns how many.
    fn remove_where(&self, tables: &[&str], pred: impl Fn(&IptOwner) -> bool) -> Result<usize> {
        let mut errors = Vec::new();
        let mut removed = 0;
        for (_, ipt) in self.families() {
            for &table in tables {
                for rule in self.listed(ipt, table)? {
                    let owner = rule.comment.as_deref().and_then(tag::parse_ipt_comment);
                    if owner.as_ref().is_some_and(&pred) {
                        match self.delete(ipt, table, &rule.chain, &rule.spec) {
                            Ok(()) => removed += 1,
                            Err(e) => errors.push(format!("{e:#}")),
                        }
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(removed)
        } else {
            bail!("{}", errors.join("; "))
        }
    }

    fn remove_vxlan_chains(&self) -> Result<()> {
        for (_, ipt) in self.families() {
            remove_vxlan_chain(ipt)?;
        }
        Ok(())
    }

    /// Flushes and deletes netloom's own chains (their jumps must be gone already).
    fn remove_chains(&self) -> Result<()> {
        self.remove_vxlan_chains()?;
        for (_, ipt) in self.families() {
            for table in NETWORK_TABLES {
                let (existing, _) = listed_with_chains(ipt, table)?;
                let ours: Vec<&str> = rules::CHAINS
                    .iter()
                    .filter(|(t, c)| *t == table && existing.iter().any(|e| e == c))
                    .map(|(_, c)| *c)
                    .collect();
                for chain in &ours {
                    ipt.flush_chain(table, chain).map_err(ipt_err(format!("{} -t {table} -F {chain}", ipt.cmd)))?;
                }
                for chain in &ours {
                    ipt.delete_chain(table, chain).map_err(ipt_err(format!("{} -t {table} -X {chain}", ipt.cmd)))?;
                }
            }
        }
        Ok(())
    }

    /// Installs the policies of `nets` in both families. Each table is listed once per family
    /// (its chains and rules), and the skeleton and every network's rules are checked against
    /// that listing: the cost of one call does not grow with the number of networks given.
    fn install(&self, nets: &[NetworkPolicy]) -> Result<()> {
        for v6 in [false, true] {
            let wanted: Vec<(String, Vec<IptRule>)> = nets
                .iter()
                .map(|net| {
                    let rules = if families_of(net).contains(&v6) { rules::network_rules(net, v6) } else { Vec::new() };
                    (net.network_id.clone(), rules)
                })
                .collect();
            let any_wanted = wanted.iter().any(|(_, rules)| !rules.is_empty());
            let ipt = match self.family(v6) {
                Ok(ipt) => ipt,
                Err(_) if !any_wanted => continue,
                Err(e) => return Err(e),
            };
            // The tables are listed side by side (one process each); then changed one by one.
            let listings: Vec<Result<(Vec<String>, Vec<ListedRule>)>> = std::thread::scope(|s| {
                let running: Vec<_> =
                    SKELETON_TABLES.iter().map(|&t| s.spawn(move || listed_with_chains(ipt, t))).collect();
                running
                    .into_iter()
                    .map(|t| t.join().unwrap_or_else(|_| Err(anyhow!("listing iptables rules panicked"))))
                    .collect()
            });
            for (table, listing) in SKELETON_TABLES.into_iter().zip(listings) {
                let (chains, listed) = listing?;
                // The loopback guard in every usable family, networks or not.
                if any_wanted || table == "raw" {
                    ensure_skeleton_in(ipt, table, &chains, &listed)?;
                }
                if table != "raw" {
                    self.sync_networks(ipt, table, &listed, &wanted)?;
                }
            }
        }
        Ok(())
    }

    /// Makes each network's rules in `table` (by comment, ports aside) exactly its `wanted`:
    /// adds the missing ones, then deletes those of an earlier policy (a changed option or
    /// bridge).
    fn sync_networks(
        &self,
        ipt: &Xtables,
        table: &str,
        listed: &[ListedRule],
        wanted: &[(String, Vec<IptRule>)],
    ) -> Result<()> {
        let ids: BTreeSet<&str> = wanted.iter().map(|(id, _)| id.as_str()).collect();
        let mut listed_by_net: BTreeMap<&str, Vec<&ListedRule>> = BTreeMap::new();
        for rule in listed {
            if let Some(IptOwner::Network(id)) = rule.comment.as_deref().and_then(tag::parse_ipt_comment) {
                if let Some(id) = ids.get(id) {
                    listed_by_net.entry(id).or_default().push(rule);
                }
            }
        }
        for (id, rules) in wanted {
            let listed = listed_by_net.remove(id.as_str()).unwrap_or_default();
            self.sync_table(ipt, table, &listed, rules)?;
        }
        Ok(())
    }

    fn sync_table(&self, ipt: &Xtables, table: &str, listed: &[&ListedRule], wanted: &[IptRule]) -> Result<()> {
        let present: BTreeSet<(String, rules::Normalized)> =
            listed.iter().map(|r| (r.chain.clone(), rules::normalized(&r.spec))).collect();
        let want: Vec<&IptRule> = wanted.iter().filter(|r| r.table == table).collect();
        let wanted_keys: BTreeSet<(String, rules::Normalized)> =
            want.iter().map(|r| (r.chain.to_string(), rules::normalized(&r.spec_string()))).collect();
        for rule in want {
            if !present.contains(&(rule.chain.to_string(), rules::normalized(&rule.spec_string()))) {
                add_rule(ipt, rule)?;
            }
        }
        for stale in listed.iter().filter(|r| !wanted_keys.contains(&(r.chain.clone(), rules::normalized(&r.spec)))) {
            self.delete(ipt, table, &stale.chain, &stale.spec)?;
        }
        Ok(())
    }

    /// Published ports in `LOOM-DNAT` of one family, with their comments.
    fn listed_ports(&self, ipt: &Xtables) -> Result<Vec<(ListedRule, PortMapping)>> {
        Ok(self.listed_ports_or_none(ipt)?.unwrap_or_default())
    }

    /// Like [`Inner::listed_ports`], `None` when `LOOM-DNAT` does not exist yet.
    fn listed_ports_or_none(&self, ipt: &Xtables) -> Result<Option<Vec<(ListedRule, PortMapping)>>> {
        let (chains, rules) = listed_with_chains(ipt, "nat")?;
        if !chains.iter().any(|c| c == rules::DNAT) {
            return Ok(None);
        }
        Ok(Some(
            rules
                .into_iter()
                .filter(|r| r.chain == rules::DNAT)
                .filter_map(|r| rules::parse_port_rule(&r.spec).map(|m| (r, m)))
                .collect(),
        ))
    }
}

/// Where netloom's jump goes in filter FORWARD: first, but after dockerd's `-j DOCKER-USER`
/// when there is one, so that the user's DOCKER-USER rules see netloom's traffic too (dockerd
/// puts that jump back on top when it restarts anyway).
pub(crate) fn forward_top(ipt: &Xtables) -> Result<i32> {
    let out = ipt.execute("filter", "-S FORWARD").map_err(ipt_err(format!("{} -S FORWARD", ipt.cmd)))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rules: Vec<&str> = text.lines().filter(|l| l.starts_with("-A FORWARD ")).collect();
    Ok(match rules.iter().position(|l| l.trim_end() == "-A FORWARD -j DOCKER-USER") {
        Some(i) => i as i32 + 2,
        None => 1,
    })
}

fn families_of(net: &NetworkPolicy) -> Vec<bool> {
    match (net.has_v4(), net.has_v6()) {
        (_, false) => vec![false],
        (false, true) => vec![true],
        (true, true) => vec![false, true],
    }
}

#[async_trait]
impl Firewall for IptablesFirewall {
    fn kind(&self) -> BackendKind {
        BackendKind::Iptables
    }

    async fn add_network(&self, net: &NetworkPolicy) -> Result<()> {
        net.validate()?;
        let id = net.network_id.clone();
        let nets = vec![net.clone()];
        self.run(move |inner| inner.install(&nets))
            .await
            .with_context(|| format!("installing iptables rules of network {id}"))
    }

    async fn add_networks(&self, nets: &[NetworkPolicy]) -> Result<()> {
        for net in nets {
            net.validate()?;
        }
        let nets = nets.to_vec();
        let count = nets.len();
        self.run(move |inner| inner.install(&nets))
            .await
            .with_context(|| format!("installing iptables rules of {count} networks"))
    }

    async fn remove_network_by_id(&self, network_id: &str) -> Result<()> {
        let id = network_id.to_string();
        self.run(move |inner| {
            inner
                .remove_where(&NETWORK_TABLES, |o| match o {
                    IptOwner::Network(n) | IptOwner::Port { network_id: n, .. } => *n == id,
                    _ => false,
                })
                .map(|_| ())
        })
        .await
        .with_context(|| format!("removing iptables rules of network {network_id}"))
    }

    async fn add_ports(&self, net: &NetworkPolicy, endpoint_id: &str, ports: &[PortMapping]) -> Result<()> {
        check_ports(net, endpoint_id, ports)?;
        let (net_id, ep_id, ports) = (net.network_id.clone(), endpoint_id.to_string(), ports.to_vec());
        let ep_tag = tag::owner_tag(endpoint_id);
        self.run(move |inner| {
            let mut added: Vec<(bool, IptRule)> = Vec::new();
            let result = (|| -> Result<()> {
                for v6 in [false, true] {
                    let wanted: Vec<&PortMapping> = ports.iter().filter(|m| m.is_ipv6() == v6).collect();
                    if wanted.is_empty() {
                        continue;
                    }
                    let ipt = inner.family(v6)?;
                    // One `iptables -S` when the skeleton is there (the usual case).
                    let existing = match inner.listed_ports_or_none(ipt)? {
                        Some(existing) => existing,
                        None => {
                            inner.ensure_skeleton(ipt)?;
                            inner.listed_ports(ipt)?
                        }
                    };
                    for m in wanted {
                        let mine = format!("netloom:net={net_id},ep={ep_tag}");
                        let same_host = existing
                            .iter()
                            .find(|(_, e)| e.proto == m.proto && e.host_port == m.host_port && e.host_ip == m.host_ip);
                        match same_host {
                            Some((r, e)) if e == m && r.comment.as_deref() == Some(mine.as_str()) => continue,
                            Some(_) => return Err(FirewallError::PortInUse(m.host_side()).into()),
                            None => {}
                        }
                        let rule = rules::port_rule(&net_id, &ep_id, m);
                        add_rule(ipt, &rule)?;
                        added.push((v6, rule));
                    }
                }
                Ok(())
            })();
            if result.is_err() {
                for (v6, rule) in added.iter().rev() {
                    if let Ok(ipt) = inner.family(*v6) {
                        let _ = inner.delete(ipt, rule.table, rule.chain, &rule.spec_string());
                    }
                }
            }
            result
        })
        .await
        .with_context(|| format!("publishing ports of endpoint {endpoint_id}"))
    }

    async fn remove_ports(&self, net: &NetworkPolicy, endpoint_id: &str, ports: &[PortMapping]) -> Result<()> {
        let (net_id, ep_id, ports) = (net.network_id.clone(), endpoint_id.to_string(), ports.to_vec());
        self.run(move |inner| {
            for v6 in [false, true] {
                let wanted: Vec<&PortMapping> = ports.iter().filter(|m| m.is_ipv6() == v6).collect();
                if wanted.is_empty() {
                    continue;
                }
                let Ok(ipt) = inner.family(v6) else { continue };
                let existing = inner.listed_ports(ipt)?;
                for m in wanted {
                    let rule = rules::port_rule(&net_id, &ep_id, m);
                    let comment = tag::ipt_port_comment(&net_id, &ep_id);
                    for (listed, _) in
                        existing.iter().filter(|(r, e)| e == m && r.comment.as_deref() == Some(comment.as_str()))
                    {
                        inner.delete(ipt, rule.table, rule.chain, &listed.spec)?;
                    }
                }
            }
            Ok(())
        })
        .await
        .with_context(|| format!("withdrawing ports of endpoint {endpoint_id}"))
    }

    async fn retain_endpoints(&self, net: &NetworkPolicy, live_endpoint_ids: &[String]) -> Result<usize> {
        let net_id = net.network_id.clone();
        let live: BTreeSet<String> = live_endpoint_ids.iter().map(|e| tag::owner_tag(e)).collect();
        self.run(move |inner| {
            let mut removed = 0;
            for (_, ipt) in inner.families() {
                for (listed, _) in inner.listed_ports(ipt)? {
                    if let Some(IptOwner::Port { network_id, endpoint_tag }) =
                        listed.comment.as_deref().and_then(tag::parse_ipt_comment)
                    {
                        if network_id == net_id && !live.contains(endpoint_tag) {
                            inner.delete(ipt, "nat", &listed.chain, &listed.spec)?;
                            removed += 1;
                        }
                    }
                }
            }
            Ok(removed)
        })
        .await
    }

    async fn owned_networks(&self) -> Result<Vec<String>> {
        self.run(|inner| {
            let mut ids = BTreeSet::new();
            for rule in inner.listed_everywhere(&NETWORK_TABLES)? {
                match rule.comment.as_deref().and_then(tag::parse_ipt_comment) {
                    Some(IptOwner::Network(id)) | Some(IptOwner::Port { network_id: id, .. }) => {
                        ids.insert(id.to_string());
                    }
                    _ => {}
                }
            }
            Ok(ids.into_iter().collect())
        })
        .await
    }

    async fn set_vxlan_guard(&self, port: u16, peers: &[IpAddr]) -> Result<()> {
        check_vxlan_port(port)?;
        let peers = peers.to_vec();
        self.run(move |inner| {
            for (v6, ipt) in inner.families() {
                let mine: Vec<IpAddr> = peers.iter().copied().filter(|p| p.is_ipv6() == v6).collect();
                set_vxlan(ipt, port, &mine)?;
            }
            Ok(())
        })
        .await
        .with_context(|| format!("setting the VXLAN guard of UDP port {port} (iptables)"))
    }

    async fn remove_vxlan_guard(&self) -> Result<()> {
        self.run(|inner| {
            for (_, ipt) in inner.families() {
                remove_vxlan(ipt)?;
            }
            Ok(())
        })
        .await
        .context("removing the VXLAN guard (iptables)")
    }

    async fn remove_all(&self) -> Result<()> {
        self.run(|inner| {
            inner.remove_where(&ALL_TABLES, |o| !matches!(o, IptOwner::Compat))?;
            inner.remove_chains()
        })
        .await
        .context("removing netloom's iptables rules")
    }
}
