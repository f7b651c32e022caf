//! A switch of firewall backend: the driver sweeps what its owners left in the backend it no
//! longer uses, leaves other netloom drivers' rules there alone, and takes the shared skeleton
//! away only with the last owner. Each test works in a network namespace of its own; needs root.

mod common;

use std::collections::BTreeSet;

use common::{policy, rules_of, snapshot, tcp, Fw, Ns, EP1, NET_A};
use netloom_firewall::{owner_tag, sweep_other_backend, BackendKind, NetworkPolicy, Swept, VXLAN_GUARD_OWNER};

const NET_B: &str = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0";

fn host_owner() -> String {
    format!("loom-host.{EP1}")
}

fn is_bridge(id: &str) -> bool {
    !id.contains('.')
}

fn is_host(id: &str) -> bool {
    id.starts_with("loom-host.")
}

fn is_overlay(id: &str) -> bool {
    id.starts_with("loom-overlay.")
}

fn add(fw: &Fw, p: &NetworkPolicy) {
    let p = p.clone();
    fw.call(move |fw| Box::pin(async move { fw.add_network(&p).await })).expect("add_network");
}

fn sweep(fw: &Fw, in_use: BackendKind, is_mine: fn(&str) -> bool) -> Swept {
    fw.call(move |_| Box::pin(sweep_other_backend(in_use, is_mine))).expect("sweep_other_backend")
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// What `backend` holds in the namespace, as its own listing prints it.
fn listing(ns: &Ns, backend: BackendKind) -> String {
    match backend {
        BackendKind::Iptables => ns.sh("iptables-save; ip6tables-save"),
        BackendKind::Nftables => ns.sh("nft list table inet netloom 2>/dev/null || true"),
    }
}

/// How often `backend`'s listing names `owner`.
fn count(ns: &Ns, backend: BackendKind, owner: &str) -> usize {
    let needle = match (backend, owner == VXLAN_GUARD_OWNER) {
        (BackendKind::Iptables, true) => "netloom:vxlan".to_string(),
        (BackendKind::Iptables, false) => format!("netloom:net={owner}"),
        (BackendKind::Nftables, true) => "vxlan".to_string(),
        (BackendKind::Nftables, false) => owner_tag(owner),
    };
    listing(ns, backend).matches(&needle).count()
}

/// Whether `backend`'s shared skeleton (loopback guard, netloom's chains or table) is there.
fn skeleton_present(ns: &Ns, backend: BackendKind) -> bool {
    let text = listing(ns, backend);
    match backend {
        BackendKind::Iptables => text.contains("netloom:base") || text.contains("LOOM-"),
        BackendKind::Nftables => text.contains("table inet netloom"),
    }
}

fn switch_sweeps(old: BackendKind) {
    common::require_root_and_tools();
    let new = old.other();
    let ns = Ns::new("sweep");
    let bridge_net = policy(NET_A, "loomA", "198.18.1.0/24");
    let host_policy = policy(&host_owner(), "lh-e1e1", "198.18.2.0/24");
    let owners = [NET_A.to_string(), host_owner(), VXLAN_GUARD_OWNER.to_string()];

    // What the drivers left in the old backend: a loom-bridge network with published ports,
    // a loom-host endpoint's policy and loom-overlay's VXLAN guard.
    {
        let fw = Fw::open(&ns, old);
        add(&fw, &bridge_net);
        add(&fw, &host_policy);
        let (p, ports) =
            (bridge_net.clone(), [tcp(None, 8080, "198.18.1.2", 80), tcp(Some("198.18.0.1"), 8081, "198.18.1.3", 80)]);
        fw.call(move |fw| Box::pin(async move { fw.add_ports(&p, EP1, &ports).await })).expect("add_ports");
        let peers = vec!["198.18.0.9".parse().unwrap()];
        fw.call(move |fw| Box::pin(async move { fw.set_vxlan_guard(4789, &peers).await })).expect("set_vxlan_guard");
    }
    let left: Vec<usize> = owners.iter().map(|o| count(&ns, old, o)).collect();
    assert!(left.iter().all(|n| *n > 0), "{old} holds no rules of some owner: {left:?}\n{}", listing(&ns, old));

    // The drivers now run on the new backend, with a network of their own there.
    let fw = Fw::open(&ns, new);
    let now = policy(NET_B, "loomB", "198.18.3.0/24");
    add(&fw, &now);
    let new_rules = count(&ns, new, NET_B);
    assert!(new_rules > 0);

    // loom-bridge sweeps: only bare network ids are its own.
    let swept = sweep(&fw, new, is_bridge);
    assert_eq!(swept.removed, [NET_A]);
    assert_eq!(swept.kept.iter().cloned().collect::<BTreeSet<_>>(), set(&[&host_owner(), VXLAN_GUARD_OWNER]));
    assert!(!swept.skeleton);
    assert_eq!(count(&ns, old, NET_A), 0, "{}", listing(&ns, old));
    assert_eq!(count(&ns, old, &host_owner()), left[1], "loom-host's rules were touched");
    assert_eq!(count(&ns, old, VXLAN_GUARD_OWNER), left[2], "loom-overlay's guard was touched");
    assert!(skeleton_present(&ns, old), "the skeleton went while other owners still use {old}");

    // loom-host, then loom-overlay switch too; the skeleton goes with the last owner.
    let swept = sweep(&fw, new, is_host);
    assert_eq!((swept.removed, swept.skeleton), (vec![host_owner()], false));
    assert_eq!(count(&ns, old, &host_owner()), 0);
    assert_eq!(count(&ns, old, VXLAN_GUARD_OWNER), left[2]);
    let swept = sweep(&fw, new, is_overlay);
    assert_eq!((swept.removed, swept.skeleton), (vec![VXLAN_GUARD_OWNER.to_string()], true));
    for owner in &owners {
        assert_eq!(count(&ns, old, owner), 0, "{owner} left in {old}:\n{}", listing(&ns, old));
    }
    assert!(!skeleton_present(&ns, old), "{old} skeleton left:\n{}", listing(&ns, old));

    // The backend in use is untouched, its iptables compat rule included; a second sweep finds
    // nothing.
    assert_eq!(count(&ns, new, NET_B), new_rules);
    let compat = ns.sh("iptables-save").matches("netloom:compat").count();
    assert_eq!(compat, usize::from(new == BackendKind::Nftables));
    assert_eq!(sweep(&fw, new, is_bridge), Swept::default());
}

#[test]
fn iptables_to_nftables_sweeps_own_rules_only() {
    switch_sweeps(BackendKind::Iptables);
}

#[test]
fn nftables_to_iptables_sweeps_own_rules_only() {
    switch_sweeps(BackendKind::Nftables);
}

/// Sweeping a namespace where netloom never ran installs nothing: no loopback guard, no table.
#[test]
fn sweeping_a_clean_host_changes_nothing() {
    common::require_root_and_tools();
    let ns = Ns::new("sweep-clean");
    let before = snapshot(&ns);
    let swept = ns.run(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        [BackendKind::Iptables, BackendKind::Nftables]
            .map(|in_use| rt.block_on(sweep_other_backend(in_use, |_| true)).expect("sweep_other_backend"))
    });
    assert_eq!(swept, [Swept::default(), Swept::default()]);
    let after = snapshot(&ns);
    assert_eq!(rules_of(&before), rules_of(&after));
    assert_eq!(before, after, "sweeping created tables");
}

/// A stopping driver removes the skeleton of its backend only once no owner has rules there:
/// with a network (or the VXLAN guard) left everything stays; after the last one nothing of
/// netloom does.
fn skeleton_goes_with_the_last_owner_at_exit(kind: BackendKind) {
    common::require_root_and_tools();
    let ns = Ns::new(&format!("exit-{kind}"));
    let before = snapshot(&ns);
    let fw = Fw::open(&ns, kind);
    let remove_unused = |fw: &Fw| -> bool {
        fw.call(move |_| Box::pin(netloom_firewall::remove_skeleton_if_unused(kind))).expect("remove_skeleton")
    };
    let a = policy(NET_A, "loomA", "198.18.1.0/24");
    add(&fw, &a);
    let with_network = snapshot(&ns);
    assert!(with_network.contains("loopback") || with_network.contains("127.0.0.0/8"), "{with_network}");
    assert!(!remove_unused(&fw), "a network's rules are left: the skeleton stays");
    assert_eq!(snapshot(&ns), with_network);
    let a2 = a.clone();
    fw.call(move |fw| Box::pin(async move { fw.remove_network(&a2).await })).expect("remove_network");
    fw.call(|fw| Box::pin(async move { fw.set_vxlan_guard(4789, &["192.0.2.1".parse().unwrap()]).await }))
        .expect("set_vxlan_guard");
    assert!(!remove_unused(&fw), "the VXLAN guard is left: the skeleton stays");
    assert!(count(&ns, kind, VXLAN_GUARD_OWNER) > 0);
    fw.call(|fw| Box::pin(async move { fw.remove_vxlan_guard().await })).expect("remove_vxlan_guard");
    assert!(remove_unused(&fw), "no owner left: the skeleton goes");
    assert_eq!(rules_of(&snapshot(&ns)), rules_of(&before), "rules left behind");
    assert!(!remove_unused(&fw), "nothing left to remove");
}

#[test]
fn iptables_skeleton_goes_with_the_last_owner_at_exit() {
    skeleton_goes_with_the_last_owner_at_exit(BackendKind::Iptables);
}

#[test]
fn nftables_skeleton_goes_with_the_last_owner_at_exit() {
    skeleton_goes_with_the_last_owner_at_exit(BackendKind::Nftables);
}
