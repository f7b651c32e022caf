//! The nftables backend: the `inet netloom` table ([`layout`]) programmed over netlink, one
//! atomic batch per operation.
//!
//! * `add_network` re-creates the skeleton (table, sets, base chains; base chains are flushed and
//!   refilled in the same batch, so concurrent drivers converge) and the network's four chains
//!   (flushed and refilled), and inserts the network's bridge into the verdict maps. It also makes
//!   sure the iptables FORWARD compat rule exists (see the crate doc).
//! * `add_ports` is one batch with one element per mapping, whatever the number of existing ports.
//! * Removals read the kernel first (chains by name, elements by their comment), then delete
//!   exactly what exists, so they are idempotent and need no memory of earlier calls.

mod expr;
mod layout;
mod netlink;
pub(crate) mod sweep;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context, Result};
use async_trait::async_trait;
use nftnl::{Batch, MsgType, ProtoFamily};
use nix::errno::Errno;
use tracing::debug;

use crate::error::FirewallError;
use crate::firewall::Firewall;
use crate::model::BackendKind;
use crate::model::{check_ports, check_vxlan_port, NetworkPolicy, PortMapping};
use crate::tag::{self, owner_tag};
use layout::{NetChains, NftRule, PortMap, PORT_MAPS, SET_BRIDGES, TABLE};
use netlink::{ElemData, NewElem, NlError, SetMsg, Socket};

pub struct NftFirewall {
    sock: Arc<Mutex<Socket>>,
}

fn nl_context(what: &str) -> impl FnOnce(NlError) -> anyhow::Error + '_ {
    move |e| anyhow!("{what}: {e}")
}

fn table() -> nftnl::Table {
    nftnl::Table::new(std::ffi::CString::new(TABLE).expect("name"), ProtoFamily::Inet)
}

/// A batch (one transaction) and a label per message, to name the message the kernel refuses.
struct Tx {
    batch: Batch,
    labels: Vec<String>,
}

impl Tx {
    fn new() -> Self {
        Self { batch: Batch::new(), labels: Vec::new() }
    }

    fn add<T: nftnl::NlMsg>(&mut self, msg: &T, msg_type: MsgType, label: impl Into<String>) {
        self.batch.add(msg, msg_type);
        self.labels.push(label.into());
    }

    fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Adds elements to a set or map, at most 200 per message (a message's element list is one
    /// netlink attribute, at most 64 KiB).
    fn elems(&mut self, set: &str, elems: &[NewElem<'_>], msg_type: MsgType) {
        for chunk in elems.chunks(200) {
            let mut m = SetMsg::named(set);
            for e in chunk {
                m.add_elem(&e.key, e.data, e.comment.as_deref());
            }
            let op = if msg_type == MsgType::Add { "add" } else { "delete" };
            self.add(&netlink::ElemsMsg(&m), msg_type, format!("{op} {} element(s) of @{set}", chunk.len()));
        }
    }

    fn rules(&mut self, table: &nftnl::Table, chain: &str, rules: &[NftRule]) {
        let c = nftnl::Chain::new(std::ffi::CString::new(chain).expect("name"), table);
        for r in rules {
            let mut rule = nftnl::Rule::new(&c);
            for e in expr::compile(r) {
                rule.add_expr(&e);
            }
            self.add(&rule, MsgType::Add, format!("rule in {chain}: {r}"));
        }
    }
}

/// Table, sets and base chains (refilled).
fn add_skeleton(tx: &mut Tx, table: &nftnl::Table) {
    tx.add(table, MsgType::Add, format!("table inet {TABLE}"));
    for spec in layout::sets() {
        tx.add(&SetMsg::define(&spec), MsgType::Add, format!("set {}", spec.name));
    }
    let skeleton = layout::skeleton();
    for c in &skeleton {
        let mut chain = netlink::ChainMsg::new(c.name);
        if let Some((hook, prio, nat)) = c.hook {
            chain = chain.base(hook, prio, nat);
        }
        tx.add(&chain, MsgType::Add, format!("chain {}", c.name));
    }
    for c in &skeleton {
        tx.add(&netlink::FlushChain::new(c.name), MsgType::Del, format!("flush chain {}", c.name));
        tx.rules(table, c.name, &c.rules);
    }
}

/// Table and port maps only: what publishing a port needs to exist (cheap when present).
fn add_port_maps(tx: &mut Tx, table: &nftnl::Table) {
    tx.add(table, MsgType::Add, format!("table inet {TABLE}"));
    for m in PORT_MAPS {
        tx.add(&SetMsg::define(&m.spec()), MsgType::Add, format!("map {}", m.name));
    }
}

/// A published port as a port-map element.
struct PortElem {
    map: PortMap,
    key: Vec<u8>,
    data: Vec<u8>,
}

fn port_elems(ports: &[&PortMapping]) -> Vec<PortElem> {
    ports
        .iter()
        .map(|m| {
            let (key, data) = layout::port_elem(m);
            PortElem { map: PortMap::of(m), key, data }
        })
        .collect()
}

/// Adds (with `comment`) or deletes port-map elements, grouped by map.
fn batch_port_elems(tx: &mut Tx, elems: &[PortElem], comment: Option<&str>, msg_type: MsgType) {
    for map in PORT_MAPS {
        let mine: Vec<NewElem<'_>> = elems
            .iter()
            .filter(|e| e.map == map)
            .map(|e| NewElem {
                key: e.key.clone(),
                data: if msg_type == MsgType::Add { ElemData::Value(&e.data) } else { ElemData::None },
                comment: comment.map(str::to_string),
            })
            .collect();
        if !mine.is_empty() {
            tx.elems(map.name, &mine, msg_type);
        }
    }
}

/// Commits a transaction; an error names the refused message.
fn apply(sock: &mut Socket, tx: Tx) -> Result<(), NlError> {
    let Tx { batch, labels } = tx;
    let finalized = batch.finalize();
    let seqs = finalized.sequence_numbers();
    // With acked batch begin/end messages (kernel 6.10+) the first message follows the begin.
    let first = if seqs.len() == labels.len() + 2 { seqs.start + 1 } else { seqs.start };
    sock.apply(&finalized).map_err(|mut e| {
        e.label = e.seq.and_then(|s| s.checked_sub(first)).and_then(|i| labels.get(i as usize)).cloned();
        e
    })
}

impl NftFirewall {
    pub async fn open() -> Result<Self> {
        // The socket is opened here, on the caller's thread, so it lives in the caller's netns.
        let mut sock = Socket::open().context("opening a NETLINK_NETFILTER socket")?;
        // The skeleton (with the loopback guard) goes in at once, whether or not a network comes;
        // refilling it also brings an older version's base chains up to date.
        let mut tx = Tx::new();
        add_skeleton(&mut tx, &table());
        apply(&mut sock, tx).map_err(|e| anyhow!("installing table inet {TABLE} (loopback guard): {e}"))?;
        Ok(Self { sock: Arc::new(Mutex::new(sock)) })
    }

    async fn run<T: Send + 'static>(&self, f: impl FnOnce(&mut Socket) -> Result<T> + Send + 'static) -> Result<T> {
        let sock = self.sock.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = sock.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut guard)
        })
        .await?
    }
}

/// Whether nf_tables answers here (the calling thread's network namespace).
pub(crate) fn probe() -> Result<(), String> {
    let mut sock = Socket::open().map_err(|e| format!("opening a NETLINK_NETFILTER socket: {e}"))?;
    sock.chains().map(|_| ()).map_err(|e| format!("listing nftables chains: {e}"))
}

/// The VXLAN guard for `port` and `peers` as one batch: sets, chains (refilled) and the element
/// changes that turn the sets' current content into `peers`.
fn vxlan_guard_tx(sock: &mut Socket, port: u16, peers: &[IpAddr]) -> Result<Tx, NlError> {
    let table = table();
    let mut tx = Tx::new();
    tx.add(&table, MsgType::Add, format!("table inet {TABLE}"));
    for spec in layout::vxlan_sets() {
        tx.add(&SetMsg::define(&spec), MsgType::Add, format!("set {}", spec.name));
    }
    let chains = layout::vxlan_chains(port);
    for c in &chains {
        let mut chain = netlink::ChainMsg::new(c.name);
        if let Some((hook, prio, nat)) = c.hook {
            chain = chain.base(hook, prio, nat);
        }
        tx.add(&chain, MsgType::Add, format!("chain {}", c.name));
    }
    for c in &chains {
        tx.add(&netlink::FlushChain::new(c.name), MsgType::Del, format!("flush chain {}", c.name));
        tx.rules(&table, c.name, &c.rules);
    }
    for set in [layout::SET_VXLAN4, layout::SET_VXLAN6] {
        let want: BTreeSet<Vec<u8>> =
            peers.iter().map(|ip| layout::vxlan_elem(*ip)).filter(|(s, _)| *s == set).map(|(_, k)| k).collect();
        let have: BTreeSet<Vec<u8>> = sock.elems(set)?.into_iter().map(|e| e.key).collect();
        let added: Vec<NewElem<'_>> = want.difference(&have).cloned().map(NewElem::key).collect();
        let gone: Vec<NewElem<'_>> = have.difference(&want).cloned().map(NewElem::key).collect();
        for e in added.iter().chain(&gone) {
            let what = if want.contains(&e.key) { "accepting" } else { "dropping" };
            debug!(peer = ?layout::vxlan_peer_from_key(&e.key), set, "nft: VXLAN guard {what}");
        }
        if !added.is_empty() {
            tx.elems(set, &added, MsgType::Add);
        }
        if !gone.is_empty() {
            tx.elems(set, &gone, MsgType::Del);
        }
    }
    Ok(tx)
}

/// Everything of one network found in the kernel, as a deletion batch (None: nothing to do).
fn network_removal(sock: &mut Socket, network_tag: &str) -> Result<Option<Tx>, NlError> {
    let chains = NetChains::of_tag(network_tag);
    let existing: BTreeSet<String> = sock.chains()?.into_iter().map(|c| c.name).collect();
    let mut tx = Tx::new();
    let mut any = false;
    let mut bridges = BTreeSet::new();
    for (map, chain) in chains.vmap_targets() {
        let keys: Vec<NewElem<'_>> = sock
            .elems(map)?
            .into_iter()
            .filter(|e| e.chain.as_deref() == Some(chain))
            .map(|e| {
                debug!(bridge = %layout::ifname_from_key(&e.key), map, "nft: unhooking a bridge");
                bridges.insert(e.key.clone());
                NewElem::key(e.key)
            })
            .collect();
        if !keys.is_empty() {
            tx.elems(map, &keys, MsgType::Del);
            any = true;
        }
    }
    if !bridges.is_empty() {
        let present: BTreeSet<Vec<u8>> = sock.elems(SET_BRIDGES)?.into_iter().map(|e| e.key).collect();
        let keys: Vec<_> = bridges.into_iter().filter(|k| present.contains(k)).map(NewElem::key).collect();
        if !keys.is_empty() {
            tx.elems(SET_BRIDGES, &keys, MsgType::Del);
        }
    }
    for map in PORT_MAPS {
        let keys: Vec<_> = sock
            .elems(map.name)?
            .into_iter()
            .filter(|e| {
                e.comment.as_deref().and_then(tag::parse_nft_elem_comment).is_some_and(|(n, _)| n == network_tag)
            })
            .map(|e| NewElem::key(e.key))
            .collect();
        if !keys.is_empty() {
            tx.elems(map.name, &keys, MsgType::Del);
            any = true;
        }
    }
    let present: Vec<&str> = chains.all().into_iter().filter(|c| existing.contains(*c)).collect();
    for c in &present {
        tx.add(&netlink::FlushChain::new(c), MsgType::Del, format!("flush chain {c}"));
    }
    for c in &present {
        tx.add(&netlink::ChainMsg::new(c), MsgType::Del, format!("delete chain {c}"));
        any = true;
    }
    Ok(any.then_some(tx))
}

/// Makes sure the iptables FORWARD compat rule exists for the families `nets` use.
fn ensure_compat(nets: &[NetworkPolicy]) -> Result<()> {
    let v4 = nets.iter().any(|n| n.has_v4() || !n.has_v6());
    let v6 = nets.iter().any(|n| n.has_v6());
    crate::compat::ensure(v4, v6).context("installing the iptables FORWARD compat rule")
}

/// Networks installed per batch by `add_networks` (a batch must fit the socket's send buffer).
const NETWORKS_PER_BATCH: usize = 64;

/// One network's chains, rules and verdict-map entries, in one batch (the compat rule aside).
fn install_network(sock: &mut Socket, net: &NetworkPolicy) -> Result<()> {
    let hooked = sock.elems(layout::MAP_FWD_IN).map_err(nl_context("reading a verdict map"))?;
    let mut tx = Tx::new();
    add_skeleton(&mut tx, &table());
    add_network_to(&mut tx, sock, net, &hooked)?;
    debug!(network = %net.network_id, bridge = %net.bridge, "nft: adding network");
    apply(sock, tx).map_err(|e| {
        if e.errno() == Some(Errno::EEXIST) {
            anyhow!("bridge {} is already used by another network's rules ({e})", net.bridge)
        } else {
            anyhow!("{e}")
        }
    })
}

/// Many networks in a few batches: each commit costs the kernel more as the ruleset grows, so
/// one commit per network made a restore of many quadratic.
fn install_networks(sock: &mut Socket, nets: &[NetworkPolicy]) -> Result<()> {
    let hooked = sock.elems(layout::MAP_FWD_IN).map_err(nl_context("reading a verdict map"))?;
    for batch in nets.chunks(NETWORKS_PER_BATCH) {
        let mut tx = Tx::new();
        add_skeleton(&mut tx, &table());
        for net in batch {
            add_network_to(&mut tx, sock, net, &hooked)?;
        }
        debug!(networks = batch.len(), "nft: adding networks");
        apply(sock, tx).map_err(|e| anyhow!("{e}"))?;
    }
    Ok(())
}

/// Adds to `tx` the network's chains (flushed and refilled), its rules and its bridge in the
/// verdict maps; `hooked` is the forward-in map as read before, to unhook the network from a
/// bridge it had before.
fn add_network_to(tx: &mut Tx, sock: &mut Socket, net: &NetworkPolicy, hooked: &[netlink::Elem]) -> Result<()> {
    let table = table();
    let chains = NetChains::of(&net.network_id);
    let comment = tag::nft_chain_comment(&net.network_id);
    for c in chains.all() {
        tx.add(&netlink::ChainMsg::new(c).comment(&comment), MsgType::Add, format!("chain {c}"));
        tx.add(&netlink::FlushChain::new(c), MsgType::Del, format!("flush chain {c}"));
    }
    let key = layout::ifname_key(&net.bridge);
    let old_keys = hooked.iter().filter(|e| e.chain.as_deref() == Some(chains.fwd_in.as_str()) && e.key != key);
    for old in old_keys.map(|e| e.key.clone()) {
        for (map, chain) in chains.vmap_targets() {
            let found = sock.elem(map, &old).map_err(nl_context("reading a verdict map"))?;
            if found.is_some_and(|e| e.chain.as_deref() == Some(chain)) {
                tx.elems(map, &[NewElem::key(old.clone())], MsgType::Del);
            }
        }
        if sock.elem(SET_BRIDGES, &old).map_err(nl_context("reading the bridge set"))?.is_some() {
            tx.elems(SET_BRIDGES, &[NewElem::key(old.clone())], MsgType::Del);
        }
    }
    let rules = layout::network_rules(net);
    tx.rules(&table, &chains.fwd_in, &rules.fwd_in);
    tx.rules(&table, &chains.fwd_out, &rules.fwd_out);
    tx.rules(&table, &chains.nat_in, &rules.nat_in);
    tx.rules(&table, &chains.nat_out, &rules.nat_out);
    tx.elems(SET_BRIDGES, &[NewElem::key(key.clone())], MsgType::Add);
    for (map, chain) in chains.vmap_targets() {
        tx.elems(map, &[NewElem { key: key.clone(), data: ElemData::Jump(chain), comment: None }], MsgType::Add);
    }
    Ok(())
}

#[async_trait]
impl Firewall for NftFirewall {
    fn kind(&self) -> BackendKind {
        BackendKind::Nftables
    }

    async fn add_network(&self, net: &NetworkPolicy) -> Result<()> {
        net.validate()?;
        let net = net.clone();
        let id = net.network_id.clone();
        self.run(move |sock| {
            ensure_compat(std::slice::from_ref(&net))?;
            install_network(sock, &net)
        })
        .await
        .with_context(|| format!("installing nftables rules of network {id}"))
    }

    async fn add_networks(&self, nets: &[NetworkPolicy]) -> Result<()> {
        for net in nets {
            net.validate()?;
        }
        let nets = nets.to_vec();
        let count = nets.len();
        self.run(move |sock| {
            // One check of the compat rule for all: each check runs iptables, which (as iptables-nft)
            // reads the whole ruleset, so one per policy made a restore quadratic.
            ensure_compat(&nets)?;
            install_networks(sock, &nets)
        })
        .await
        .with_context(|| format!("installing nftables rules of {count} networks"))
    }

    async fn remove_network_by_id(&self, network_id: &str) -> Result<()> {
        let network_tag = owner_tag(network_id);
        self.run(move |sock| remove_network_tag(sock, &network_tag))
            .await
            .with_context(|| format!("removing nftables rules of network {network_id}"))
    }

    async fn add_ports(&self, net: &NetworkPolicy, endpoint_id: &str, ports: &[PortMapping]) -> Result<()> {
        check_ports(net, endpoint_id, ports)?;
        if ports.is_empty() {
            return Ok(());
        }
        let comment = tag::nft_elem_comment(&net.network_id, endpoint_id);
        let ports = ports.to_vec();
        let ep = endpoint_id.to_string();
        let ep_for_log = ep.clone();
        self.run(move |sock| {
            let table = table();
            let mut tx = Tx::new();
            add_port_maps(&mut tx, &table);
            let refs: Vec<&PortMapping> = ports.iter().collect();
            for m in &refs {
                debug!(endpoint = %ep_for_log, element = %layout::render_port_elem(m), map = PortMap::of(m).name, "nft: publishing");
            }
            batch_port_elems(&mut tx, &port_elems(&refs), Some(&comment), MsgType::Add);
            match apply(sock, tx) {
                Ok(()) => Ok(()),
                Err(e) if e.errno() == Some(Errno::EEXIST) => {
                    // Name the mapping that clashes.
                    for m in &ports {
                        let (k, d) = layout::port_elem(m);
                        if let Ok(Some(found)) = sock.elem(PortMap::of(m).name, &k) {
                            if found.data != d {
                                return Err(FirewallError::PortInUse(m.host_side()).into());
                            }
                        }
                    }
                    Err(FirewallError::PortInUse(ports.iter().map(PortMapping::host_side).collect::<Vec<_>>().join(", ")).into())
                }
                Err(e) => Err(anyhow!("{e}")),
            }
        })
        .await
        .with_context(|| format!("publishing ports of endpoint {ep}"))
    }

    async fn remove_ports(&self, net: &NetworkPolicy, endpoint_id: &str, ports: &[PortMapping]) -> Result<()> {
        let mine = (owner_tag(&net.network_id), owner_tag(endpoint_id));
        let ports = ports.to_vec();
        let ep = endpoint_id.to_string();
        self.run(move |sock| {
            // Delete only elements that exist and map to this endpoint's destination.
            let mut present = Vec::new();
            for m in &ports {
                let (k, d) = layout::port_elem(m);
                let found = sock.elem(PortMap::of(m).name, &k).map_err(nl_context("reading a port map"))?;
                if let Some(found) = found {
                    let owner = found.comment.as_deref().and_then(tag::parse_nft_elem_comment);
                    let owned = owner.is_none_or(|(n, e)| (n, e) == (mine.0.as_str(), mine.1.as_str()));
                    if found.data == d && owned {
                        present.push(m);
                    }
                }
            }
            if present.is_empty() {
                return Ok(());
            }
            let mut tx = Tx::new();
            batch_port_elems(&mut tx, &port_elems(&present), None, MsgType::Del);
            apply(sock, tx).map_err(|e| anyhow!("{e}"))
        })
        .await
        .with_context(|| format!("withdrawing ports of endpoint {ep}"))
    }

    async fn retain_endpoints(&self, net: &NetworkPolicy, live_endpoint_ids: &[String]) -> Result<usize> {
        let network_tag = owner_tag(&net.network_id);
        let live: BTreeSet<String> = live_endpoint_ids.iter().map(|e| owner_tag(e)).collect();
        self.run(move |sock| {
            let mut tx = Tx::new();
            let mut removed = 0;
            for map in PORT_MAPS {
                let keys: Vec<_> = sock
                    .elems(map.name)
                    .map_err(nl_context("reading a port map"))?
                    .into_iter()
                    .filter(|e| {
                        e.comment
                            .as_deref()
                            .and_then(tag::parse_nft_elem_comment)
                            .is_some_and(|(n, ep)| n == network_tag && !live.contains(ep))
                    })
                    .map(|e| {
                        if let Some(m) = layout::port_from_elem(&map, &e.key, &e.data) {
                            debug!(element = %layout::render_port_elem(&m), "nft: withdrawing a port of a vanished endpoint");
                        }
                        NewElem::key(e.key)
                    })
                    .collect();
                removed += keys.len();
                if !keys.is_empty() {
                    tx.elems(map.name, &keys, MsgType::Del);
                }
            }
            if !tx.is_empty() {
                apply(sock, tx).map_err(|e| anyhow!("{e}"))?;
            }
            Ok(removed)
        })
        .await
    }

    async fn owned_networks(&self) -> Result<Vec<String>> {
        self.run(|sock| {
            let chains = sock.chains().map_err(nl_context("listing chains"))?;
            let ids: BTreeSet<String> = chains
                .into_iter()
                .filter(|c| layout::tag_of_chain(&c.name).is_some())
                .filter_map(|c| c.comment.as_deref().and_then(tag::parse_nft_chain_comment).map(str::to_string))
                .collect();
            Ok(ids.into_iter().collect())
        })
        .await
    }

    async fn set_vxlan_guard(&self, port: u16, peers: &[IpAddr]) -> Result<()> {
        check_vxlan_port(port)?;
        let peers = peers.to_vec();
        self.run(move |sock| {
            // Read, then change; a concurrent change of the sets in between fails the batch
            // (EEXIST/ENOENT), and reading again converges.
            for attempt in 0..3 {
                let tx = vxlan_guard_tx(sock, port, &peers).map_err(nl_context("reading the VXLAN peer sets"))?;
                match apply(sock, tx) {
                    Ok(()) => return Ok(()),
                    Err(e) if matches!(e.errno(), Some(Errno::ENOENT | Errno::EEXIST)) && attempt < 2 => continue,
                    Err(e) => return Err(anyhow!("{e}")),
                }
            }
            Ok(())
        })
        .await
        .with_context(|| format!("setting the VXLAN guard of UDP port {port} (nftables)"))
    }

    async fn remove_vxlan_guard(&self) -> Result<()> {
        self.run(remove_vxlan_guard).await.context("removing the VXLAN guard (nftables)")
    }

    async fn remove_all(&self) -> Result<()> {
        self.run(remove_table).await
    }
}

/// Removes everything of the network with this tag (chains, verdict-map and port elements).
fn remove_network_tag(sock: &mut Socket, network_tag: &str) -> Result<()> {
    // Read, then delete what was read; a concurrent change in between makes the batch fail
    // (ENOENT), and reading again converges.
    for attempt in 0..3 {
        let Some(batch) = network_removal(sock, network_tag).map_err(nl_context("reading the ruleset"))? else {
            return Ok(());
        };
        match apply(sock, batch) {
            Ok(()) => return Ok(()),
            Err(e) if e.errno() == Some(Errno::ENOENT) && attempt < 2 => continue,
            Err(e) => return Err(anyhow!("{e}")),
        }
    }
    Ok(())
}

fn remove_vxlan_guard(sock: &mut Socket) -> Result<()> {
    let existing: BTreeSet<String> =
        sock.chains().map_err(nl_context("listing chains"))?.into_iter().map(|c| c.name).collect();
    let build = |with_sets: bool| {
        let mut tx = Tx::new();
        for c in [layout::CHAIN_VXLAN_IN, layout::CHAIN_VXLAN_FWD].into_iter().filter(|c| existing.contains(*c)) {
            tx.add(&netlink::FlushChain::new(c), MsgType::Del, format!("flush chain {c}"));
            tx.add(&netlink::ChainMsg::new(c), MsgType::Del, format!("delete chain {c}"));
        }
        if with_sets {
            for set in [layout::SET_VXLAN4, layout::SET_VXLAN6] {
                tx.add(&SetMsg::named(set), MsgType::Del, format!("delete set {set}"));
            }
        }
        tx
    };
    match apply(sock, build(true)) {
        Ok(()) => Ok(()),
        // The sets were not there (nor, then, the table or the guard).
        Err(e) if e.errno() == Some(Errno::ENOENT) => {
            let tx = build(false);
            if tx.is_empty() {
                return Ok(());
            }
            apply(sock, tx).map_err(|e| anyhow!("{e}"))
        }
        Err(e) => Err(anyhow!("{e}")),
    }
}

/// Deletes `inet netloom` and the compat rule that lets its accepted packets through iptables.
fn remove_table(sock: &mut Socket) -> Result<()> {
    let mut tx = Tx::new();
    tx.add(&table(), MsgType::Del, format!("delete table inet {TABLE}"));
    match apply(sock, tx) {
        Ok(()) => {}
        Err(e) if e.errno() == Some(Errno::ENOENT) => {}
        Err(e) => return Err(anyhow!("deleting table inet {TABLE}: {e}")),
    }
    crate::compat::remove()
}
