//! netloom's shared firewall: outbound NAT, forwarding policy (icc, isolation, internal networks)
//! and published ports for bridge-like networks, with Docker's bridge semantics and the userland
//! proxy off (everything happens in the kernel).
//!
//! One interface, [`Firewall`], with two backends picked by [`BackendKind`]:
//!
//! * **iptables** drives the `iptables`/`ip6tables` binaries, every call bounded: `--wait 10` (the
//!   xtables lock, `/run/xtables.lock`, is waited for at most 10 s) and a process timeout; a call
//!   that times out fails alone, naming the lock. netloom's rules live in its own chains, hooked
//!   from the built-in chains by one jump each; every rule carries a `netloom:…` comment naming its
//!   owner, and netloom never flushes, reorders or deletes a rule it does not own.
//! * **nftables** programs one table of its own, `inet netloom`, over netlink (libnftnl through the
//!   `nftnl` crate; no `nft` process). Every change is one atomic batch. Per-network policy lives in
//!   per-network chains reached through verdict maps keyed by interface name, and published ports
//!   are elements of DNAT maps, so publishing a port is one element insert whatever the number of
//!   existing ports (unlike a rule per port, whose cost grows with the ruleset, moby#53466).
//!
//! [`BackendKind::detect`] picks nftables where the kernel's nf_tables answers over netlink, else
//! iptables (the drivers' `--firewall auto`, the default).
//!
//! Both backends keep no state in memory: everything is re-derived from the kernel (chain names,
//! rule comments, map elements and their comments), so a driver that was SIGKILLed can list what
//! it owns ([`Firewall::owned_networks`]) and remove leftovers.
//!
//! # The host boundary (both backends)
//!
//! * **Loopback guard**, installed by [`open`] (and kept by `add_network`): packets to
//!   127.0.0.0/8 or `::1` that did not come in on `lo` are dropped in prerouting at priority raw,
//!   before conntrack and DNAT. `route_localnet`, which published ports on 127.0.0.1 need on
//!   every bridge, would otherwise let a container or a LAN neighbour that routes 127/8 to the
//!   host reach the host's services bound to 127.0.0.1 (CVE-2020-8558). Ports published on
//!   127.0.0.1 are DNATed only in output (the host's own connections): the prerouting DNAT skips
//!   127/8. Nothing that is not an attack is lost: the kernel never sends the host's own
//!   loopback traffic anywhere but `lo`. Users must not delete these rules while any
//!   network uses `route_localnet`.
//! * **VXLAN guard** ([`Firewall::set_vxlan_guard`]): UDP to the VXLAN port of a local address
//!   only from the member hosts' tunnel endpoints, and no forwarded traffic to that port.
//!
//! # Semantics (both backends)
//!
//! For a network on bridge `B` with subnets `S`:
//!
//! * **egress**: `iif B, oif ≠ B` is accepted unless the network is internal; with `masquerade`,
//!   `saddr ∈ S, oif ≠ B` is masqueraded (or SNATed to `snat_source` for its family).
//! * **replies**: `oif B` with conntrack state established/related is accepted.
//! * **icc**: `iif B, oif B` is accepted (icc) or dropped (no icc; replies and DNATed traffic,
//!   i.e. hairpin, still pass). This only matters when `bridge-nf-call-iptables=1` (br_netfilter)
//!   sends bridged frames through IP FORWARD — then, with FORWARD's policy DROP, the explicit
//!   accept is what keeps containers of one network talking. The dataplane enforces icc=false
//!   with isolated bridge ports anyway; the drop is a second line of defence. (On this kernel the
//!   sysctl is per network namespace and defaults to 1 in a new one.)
//! * **published ports**: a packet to a local address (`fib daddr type local` /
//!   `-m addrtype --dst-type LOCAL`) and a published `(proto, port)`, optionally restricted to one
//!   host address, is DNATed to the container, in PREROUTING and in OUTPUT (so the host reaches
//!   it too). DNATed traffic towards `B` is accepted even when the network is isolated.
//!   *Hairpin*: traffic from `S` DNATed back into `B` is masqueraded, so a container can use its
//!   own network's published ports through a host address (the dataplane sets hairpin mode on
//!   the bridge ports). *Localhost*: traffic from 127.0.0.0/8 leaving through `B` is masqueraded;
//!   this also needs `net.ipv4.conf.B.route_localnet=1` ([`enable_route_localnet`]). There is no
//!   IPv6 equivalent (the kernel never routes `::1`).
//! * **isolation** (`isolate`): into `B` only replies, DNATed traffic and `B`'s own traffic get
//!   in (from anywhere: other bridges, Docker's, the uplink); out of `B`, new connections to
//!   another bridge (another netloom network, `docker0` or Docker's `br-*`) are dropped unless
//!   DNATed. Without `isolate`, anything not stopped by the source network's own policy may enter
//!   (routed access to container addresses, as Docker ≤ 27 with FORWARD ACCEPT).
//! * **internal**: nothing leaves or enters `B` except `B`'s own traffic (not even DNATed
//!   traffic or replies); no NAT.
//!
//! `add_network` with a changed policy (options, bridge name) replaces the network's earlier
//! rules.
//!
//! # Layouts
//!
//! * iptables: the loopback guard and the VXLAN guard's jump to `LOOM-VXLAN` in raw PREROUTING;
//!   `FORWARD → LOOM-FORWARD → LOOM-ISOLATION-1 → LOOM-ISOLATION-2` in filter;
//!   `PREROUTING/OUTPUT (dst-type LOCAL) → LOOM-DNAT` (one DNAT rule per port) and
//!   `POSTROUTING → LOOM-POSTROUTING` in nat; the same in ip6tables for IPv6 subnets. Details in
//!   `src/iptables/rules.rs`.
//! * nftables: table `inet netloom` with an `ifname` set of netloom bridges, four
//!   `ifname : verdict` maps leading to each network's four chains (`net-<tag>-fwd-in`, `-fwd-out`,
//!   `-nat-in`, `-nat-out`), and four DNAT maps, `[daddr .] l4proto . dport : addr . port` per
//!   family; base chains `loopback` (and, with the VXLAN guard, `vxlan-in`/`vxlan-fwd` and two
//!   address sets). Details in `src/nft/layout.rs`.
//!
//! # Living with dockerd (FORWARD policy DROP)
//!
//! dockerd sets the iptables filter FORWARD policy to DROP and adds its own chains.
//!
//! * The iptables backend jumps to `LOOM-FORWARD` from the top of FORWARD, and its ACCEPTs end
//!   the packet's trip through FORWARD before the policy applies.
//! * The nftables backend cannot do that on its own: an `accept` in one nftables base chain does
//!   not stop the packet from traversing the other base chains on the same hook, and iptables-nft's
//!   FORWARD (or legacy iptables' x_tables FORWARD) would still drop it. So every packet the
//!   `inet netloom` forward chain accepts also gets mark bit [`FORWARD_MARK`], and the backend
//!   keeps exactly one compat rule at the top of iptables' (and ip6tables') filter FORWARD:
//!   `-m mark --mark 0x10000000/0x10000000 -m comment --comment netloom:compat -j ACCEPT`.
//!   It installs the rule whenever the `iptables` binary exists, even if FORWARD's policy is still
//!   ACCEPT, because dockerd usually starts after the network drivers and would otherwise cut our
//!   traffic until the next reconcile. `add_network` re-checks it, so a reconciler that re-applies
//!   its networks also repairs a flushed FORWARD (firewalld reloads, iptables restarts).
//!
//! # What stays after removal
//!
//! `remove_network` deletes every rule, chain and element of that network. The shared skeleton
//! stays: for iptables the `LOOM-*` chains, their jumps, the loopback guard and the base isolation
//! rules for Docker's bridges; for nftables the `inet netloom` table with its base chains (the
//! loopback guard among them), empty maps, and the compat rule. [`Firewall::remove_all`] removes those as well; what remains are iptables tables that
//! netloom's first rule made `iptables` create (with iptables-nft, e.g. an empty `ip nat` table
//! with its built-in chains, or `ip filter` for the compat rule) — empty, policy ACCEPT.
//!
//! # Switching backends
//!
//! A driver that now runs on the other backend (`--firewall auto` picks nftables where iptables
//! was used before) calls [`sweep_other_backend`] at start with a predicate picking its own owner
//! ids: the old backend's rules of those owners are removed, other netloom drivers' stay, and
//! the old backend's skeleton goes with its last owner.
//!
//! # Threads and network namespaces
//!
//! [`open`] binds the backend to the network namespace of the calling thread (the nftables
//! socket is opened there). Work runs on tokio's blocking pool, and the iptables binaries are
//! started from those threads, so the runtime's threads must live in the same namespace — true
//! for a normal process; a test that enters another namespace should build its runtime on the
//! thread that entered it (see `tests/common`).

mod backend;
mod compat;
mod error;
mod firewall;
#[cfg(test)]
mod fixtures;
mod iptables;
mod model;
mod nft;
mod tag;

use anyhow::Result;

pub use backend::{open, remove_skeleton_if_unused, sweep_other_backend};
pub use compat::FORWARD_MARK;
pub use error::FirewallError;
pub use firewall::Firewall;
pub use model::{BackendChoice, BackendKind, NetworkPolicy, PortMapping, Proto, Swept, VXLAN_GUARD_OWNER};
pub use tag::owner_tag;

/// Sets `net.ipv4.conf.<bridge>.route_localnet=1`, which lets packets from 127.0.0.0/8 that were
/// DNATed to a container leave through the bridge (published ports reachable on the host's
/// 127.0.0.1). Applies to the caller's network namespace.
pub fn enable_route_localnet(bridge: &str) -> Result<()> {
    model::check_ifname(bridge)?;
    let path = format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet");
    if std::fs::read_to_string(&path).map(|v| v.trim() == "1").unwrap_or(false) {
        return Ok(());
    }
    std::fs::write(&path, "1").map_err(|e| anyhow::anyhow!("setting {path}=1: {e}"))
}
