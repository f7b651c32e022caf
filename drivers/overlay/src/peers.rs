//! From the store's peer table to the kernel's tables, as pure functions: which FDB and
//! neighbour entries a host wants on a network's VXLAN link, and what to change to get there.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use netloom_dataplane::{mac, FdbEntry, NeighbourEntry};
use netloom_store::Revision;

use crate::liveness::Liveness;
use crate::records::PeerRecord;

/// What a host wants on one network's VXLAN link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub fdb: BTreeMap<[u8; 6], FdbEntry>,
    pub neighbours: BTreeMap<IpAddr, [u8; 6]>,
}

/// Every remote endpoint of live and absent hosts: its MAC behind its host's VTEP, its addresses
/// at its MAC.
///
/// Endpoints of this host are reached through the bridge and get nothing. Endpoints of gone
/// hosts are left out. When two records claim the same MAC or address (a container moved, or an
/// address was reused before the old record went), the one written last wins; an absent host's
/// endpoint that lost any of its MAC and addresses so is left out altogether (its host is not
/// there to say otherwise). `own_port` is this host's VXLAN port: remotes on the same port get
/// entries without a port.
///
/// `tunnel_ips` is given for an encrypted network: its frames go to the peer host's tunnel
/// address (host → address, from the hosts' tunnel records) instead of its VTEP, and an endpoint
/// of a host without a tunnel record gets no entry until it has one.
pub fn desired(
    peers: &BTreeMap<String, (PeerRecord, Revision)>,
    liveness: impl Fn(&str) -> Liveness,
    own_host: &str,
    own_port: u16,
    tunnel_ips: Option<&BTreeMap<String, IpAddr>>,
) -> Desired {
    let counts = |p: &PeerRecord| p.host == own_host || liveness(&p.host) != Liveness::Gone;
    let mut current: Vec<(&PeerRecord, Revision, Option<[u8; 6]>)> =
        peers.values().filter(|(p, _)| counts(p)).map(|(p, rev)| (p, *rev, mac::parse(&p.mac).ok())).collect();
    // Oldest first, so later writes overwrite earlier ones below.
    current.sort_by_key(|(p, rev, _)| (*rev, p.endpoint.clone()));
    let mut newest_mac: BTreeMap<[u8; 6], Revision> = BTreeMap::new();
    let mut newest_ip: BTreeMap<IpAddr, Revision> = BTreeMap::new();
    for (peer, rev, mac_addr) in &current {
        if let Some(mac_addr) = mac_addr {
            newest_mac.insert(*mac_addr, *rev);
        }
        for ip in [peer.ipv4, peer.ipv6].into_iter().flatten() {
            newest_ip.insert(ip, *rev);
        }
    }
    let mut out = Desired::default();
    for (peer, rev, mac_addr) in current {
        let Some(mac_addr) = mac_addr else { continue };
        if peer.host == own_host {
            continue;
        }
        let claimed_since =
            newest_mac[&mac_addr] > rev || [peer.ipv4, peer.ipv6].into_iter().flatten().any(|ip| newest_ip[&ip] > rev);
        if claimed_since && liveness(&peer.host) == Liveness::Absent {
            continue;
        }
        let dst = match tunnel_ips {
            None => peer.vtep,
            Some(ips) => match ips.get(&peer.host) {
                Some(ip) => *ip,
                None => continue,
            },
        };
        let port = (peer.port != own_port).then_some(peer.port);
        out.fdb.insert(mac_addr, FdbEntry { mac: mac_addr, dst, port });
        for ip in [peer.ipv4, peer.ipv6].into_iter().flatten() {
            out.neighbours.insert(ip, mac_addr);
        }
    }
    out
}

/// The changes that make the kernel's entries (`fdb`, `neighbours`) what `want` says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub fdb_set: Vec<FdbEntry>,
    pub fdb_remove: Vec<[u8; 6]>,
    pub neighbour_set: Vec<NeighbourEntry>,
    pub neighbour_remove: Vec<IpAddr>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.fdb_set.is_empty()
            && self.fdb_remove.is_empty()
            && self.neighbour_set.is_empty()
            && self.neighbour_remove.is_empty()
    }
}

pub fn diff(want: &Desired, fdb: &[FdbEntry], neighbours: &[NeighbourEntry]) -> Changes {
    let mut changes = Changes::default();
    let have_fdb: BTreeMap<[u8; 6], &FdbEntry> = fdb.iter().map(|e| (e.mac, e)).collect();
    for (mac_addr, entry) in &want.fdb {
        if have_fdb.get(mac_addr) != Some(&entry) {
            changes.fdb_set.push(*entry);
        }
    }
    let mut removed: BTreeSet<[u8; 6]> = BTreeSet::new();
    for entry in fdb {
        if !want.fdb.contains_key(&entry.mac) && removed.insert(entry.mac) {
            changes.fdb_remove.push(entry.mac);
        }
    }
    let have_neighbours: BTreeMap<IpAddr, [u8; 6]> = neighbours.iter().map(|n| (n.ip, n.mac)).collect();
    for (ip, mac_addr) in &want.neighbours {
        if have_neighbours.get(ip) != Some(mac_addr) {
            changes.neighbour_set.push(NeighbourEntry { ip: *ip, mac: *mac_addr });
        }
    }
    for entry in neighbours {
        if !want.neighbours.contains_key(&entry.ip) {
            changes.neighbour_remove.push(entry.ip);
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(host: &str, ep: &str, vtep: &str, mac_text: &str, ip: &str) -> PeerRecord {
        PeerRecord {
            host: host.into(),
            endpoint: ep.into(),
            vtep: vtep.parse().unwrap(),
            port: 4789,
            mac: mac_text.into(),
            ipv4: Some(ip.parse().unwrap()),
            ipv6: None,
        }
    }

    fn hosts<'a>(names: &'a [&'a str]) -> impl Fn(&str) -> Liveness + 'a {
        move |h| if names.contains(&h) { Liveness::Live } else { Liveness::Gone }
    }

    fn table(list: Vec<(PeerRecord, Revision)>) -> BTreeMap<String, (PeerRecord, Revision)> {
        list.into_iter().map(|(p, r)| (p.endpoint.clone(), (p, r))).collect()
    }

    const A: [u8; 6] = [2, 0x42, 10, 9, 0, 2];
    const B: [u8; 6] = [2, 0x42, 10, 9, 0, 3];

    #[test]
    fn remote_live_peers_only() {
        let peers = table(vec![
            (peer("h1", "e1", "10.250.0.1", "02:42:0a:09:00:02", "10.9.0.2"), 5),
            (peer("h2", "e2", "10.250.0.2", "02:42:0a:09:00:03", "10.9.0.3"), 6),
            (peer("dead", "e3", "10.250.0.3", "02:42:0a:09:00:04", "10.9.0.4"), 7),
            (peer("h2", "bad", "10.250.0.2", "not-a-mac", "10.9.0.9"), 8),
        ]);
        let want = desired(&peers, hosts(&["h1", "h2"]), "h1", 4789, None);
        assert_eq!(want.fdb.len(), 1, "{want:?}");
        assert_eq!(want.fdb[&B], FdbEntry { mac: B, dst: "10.250.0.2".parse().unwrap(), port: None });
        assert_eq!(want.neighbours, BTreeMap::from([("10.9.0.3".parse().unwrap(), B)]));

        // Another port is spelled out.
        let want = desired(&peers, hosts(&["h1", "h2"]), "h1", 8472, None);
        assert_eq!(want.fdb[&B].port, Some(4789));
    }

    #[test]
    fn the_latest_record_wins() {
        // 10.9.0.2 was reused by a new endpoint with a new MAC before the old record went.
        let peers = table(vec![
            (peer("h2", "new", "10.250.0.2", "02:42:0a:09:00:03", "10.9.0.2"), 9),
            (peer("h3", "old", "10.250.0.3", "02:42:0a:09:00:02", "10.9.0.2"), 4),
        ]);
        let want = desired(&peers, hosts(&["h1", "h2", "h3"]), "h1", 4789, None);
        assert_eq!(want.neighbours[&"10.9.0.2".parse::<IpAddr>().unwrap()], B);
        assert_eq!(want.fdb.len(), 2, "both MACs are still reachable");
    }

    #[test]
    fn an_absent_hosts_endpoints_stay_until_claimed() {
        let liveness = |h: &str| match h {
            "h1" | "h2" => Liveness::Live,
            "down" => Liveness::Absent,
            _ => Liveness::Gone,
        };
        let mut peers = table(vec![
            (peer("down", "e1", "10.250.0.3", "02:42:0a:09:00:02", "10.9.0.2"), 5),
            (peer("down", "e2", "10.250.0.3", "02:42:0a:09:00:03", "10.9.0.3"), 6),
            (peer("gone", "e4", "10.250.0.4", "02:42:0a:09:00:04", "10.9.0.4"), 7),
        ]);
        let want = desired(&peers, liveness, "h1", 4789, None);
        assert_eq!(want.fdb.len(), 2, "the absent host's endpoints stay, the gone one's go: {want:?}");
        assert_eq!(want.fdb[&A].dst, "10.250.0.3".parse::<IpAddr>().unwrap());
        // 10.9.0.2 taken by a newer endpoint on a live host: the absent one's entries go, both.
        peers.insert("e5".into(), (peer("h2", "e5", "10.250.0.2", "02:42:0a:09:00:05", "10.9.0.2"), 8));
        // Its MAC taken by a newer endpoint on this very host: the same.
        peers.insert("e6".into(), (peer("h1", "e6", "10.250.0.1", "02:42:0a:09:00:03", "10.9.0.6"), 9));
        let want = desired(&peers, liveness, "h1", 4789, None);
        let mac5 = mac::parse("02:42:0a:09:00:05").unwrap();
        assert_eq!(want.fdb.keys().copied().collect::<Vec<_>>(), vec![mac5], "{want:?}");
        assert_eq!(want.neighbours, BTreeMap::from([("10.9.0.2".parse().unwrap(), mac5)]));
    }

    #[test]
    fn encrypted_networks_point_at_tunnel_addresses() {
        let peers = table(vec![
            (peer("h1", "e1", "10.250.0.1", "02:42:0a:09:00:02", "10.9.0.2"), 5),
            (peer("h2", "e2", "10.250.0.2", "02:42:0a:09:00:03", "10.9.0.3"), 6),
            (peer("h3", "e3", "10.250.0.3", "02:42:0a:09:00:04", "10.9.0.4"), 7),
        ]);
        let live = hosts(&["h1", "h2", "h3"]);
        // h3 has no tunnel record yet: its endpoint waits for one.
        let tunnels: BTreeMap<String, IpAddr> = BTreeMap::from([
            ("h1".into(), "100.64.0.1".parse().unwrap()),
            ("h2".into(), "100.64.0.2".parse().unwrap()),
        ]);
        let want = desired(&peers, &live, "h1", 4789, Some(&tunnels));
        assert_eq!(want.fdb.len(), 1, "{want:?}");
        assert_eq!(want.fdb[&B], FdbEntry { mac: B, dst: "100.64.0.2".parse().unwrap(), port: None });
        assert_eq!(want.neighbours, BTreeMap::from([("10.9.0.3".parse().unwrap(), B)]));
        // Once it has one, it gets its entry; no entry ever points at an underlay address.
        let mut tunnels = tunnels;
        tunnels.insert("h3".into(), "100.64.0.3".parse().unwrap());
        let want = desired(&peers, &live, "h1", 4789, Some(&tunnels));
        assert_eq!(want.fdb.len(), 2);
        assert!(want.fdb.values().all(|e| e.dst.to_string().starts_with("100.64.")), "{want:?}");
        // The same table for a plain network points at the VTEPs.
        let plain = desired(&peers, &live, "h1", 4789, None);
        assert!(plain.fdb.values().all(|e| e.dst.to_string().starts_with("10.250.")), "{plain:?}");
    }

    #[test]
    fn diffs() {
        let vtep2: IpAddr = "10.250.0.2".parse().unwrap();
        let vtep3: IpAddr = "10.250.0.3".parse().unwrap();
        let ip2: IpAddr = "10.9.0.2".parse().unwrap();
        let ip3: IpAddr = "10.9.0.3".parse().unwrap();
        let want = Desired {
            fdb: BTreeMap::from([(A, FdbEntry { mac: A, dst: vtep2, port: None })]),
            neighbours: BTreeMap::from([(ip2, A)]),
        };
        // Empty kernel: everything is added.
        let changes = diff(&want, &[], &[]);
        assert_eq!(changes.fdb_set.len(), 1);
        assert_eq!(changes.neighbour_set, vec![NeighbourEntry { ip: ip2, mac: A }]);
        // In sync: nothing to do.
        let kernel_fdb = vec![FdbEntry { mac: A, dst: vtep2, port: None }];
        let kernel_neigh = vec![NeighbourEntry { ip: ip2, mac: A }];
        assert!(diff(&want, &kernel_fdb, &kernel_neigh).is_empty());
        // Stale entries go, a moved MAC is replaced, a reused address gets its new MAC.
        let stale_fdb = vec![FdbEntry { mac: A, dst: vtep3, port: None }, FdbEntry { mac: B, dst: vtep3, port: None }];
        let stale_neigh = vec![NeighbourEntry { ip: ip2, mac: B }, NeighbourEntry { ip: ip3, mac: B }];
        let changes = diff(&want, &stale_fdb, &stale_neigh);
        assert_eq!(changes.fdb_set, vec![FdbEntry { mac: A, dst: vtep2, port: None }]);
        assert_eq!(changes.fdb_remove, vec![B]);
        assert_eq!(changes.neighbour_set, vec![NeighbourEntry { ip: ip2, mac: A }]);
        assert_eq!(changes.neighbour_remove, vec![ip3]);
        // Nothing wanted: everything goes.
        let changes = diff(&Desired::default(), &stale_fdb, &stale_neigh);
        assert_eq!(changes.fdb_remove, vec![A, B]);
        assert_eq!(changes.neighbour_remove, vec![ip2, ip3]);
    }
}
