//! VXLAN links, their FDB and neighbour entries, and network namespaces bound to files, against
//! the real kernel. Each test runs on a thread with a network namespace and a private mount
//! namespace of its own (unshare(2)), so namespaces and bind mounts disappear with the thread.

mod common;

use std::net::IpAddr;

use common::in_new_netns;
use netloom_dataplane::{BridgeSpec, FdbEntry, NeighbourEntry, Netlink, Netns, VethSpec, VxlanSpec};

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A link with `address`, to be the tunnel endpoint (a veth: this kernel may have no dummy links).
async fn underlay(address: &str) {
    let status = std::process::Command::new("ip")
        .args(["link", "add", "ul0", "type", "veth", "peer", "name", "ul1"])
        .status()
        .unwrap();
    assert!(status.success());
    for args in [vec!["addr", "add", address, "dev", "ul0"], vec!["link", "set", "ul0", "up"]] {
        assert!(std::process::Command::new("ip").args(&args).status().unwrap().success());
    }
}

fn spec(vni: u32) -> VxlanSpec<'static> {
    VxlanSpec {
        name: "vx-t",
        vni,
        local: ip("10.99.0.1"),
        port: 4789,
        mtu: Some(1450),
        proxy_arp: true,
        owner: "netloom:test:n1",
    }
}

#[test]
fn vxlan_link_is_created_reused_and_replaced() {
    in_new_netns(|| async {
        underlay("10.99.0.1/24").await;
        let nl = Netlink::connect().unwrap();
        let first = nl.ensure_vxlan(&spec(4100)).await.unwrap();
        assert!(first.is_kind("vxlan") && first.up, "{first:?}");
        assert_eq!(first.mtu, 1450);
        let info = nl.vxlan_info("vx-t").await.unwrap().unwrap();
        assert_eq!((info.vni, info.port, info.learning, info.proxy), (Some(4100), Some(4789), Some(false), Some(true)));

        let again = nl.ensure_vxlan(&spec(4100)).await.unwrap();
        assert_eq!(again.index, first.index, "the same link is reused");

        let replaced = nl.ensure_vxlan(&spec(4101)).await.unwrap();
        assert_ne!(replaced.index, first.index, "another VNI replaces the link");
        assert_eq!(nl.vxlan_info("vx-t").await.unwrap().unwrap().vni, Some(4101));

        let theirs = VxlanSpec { owner: "netloom:test:n2", ..spec(4101) };
        let err = nl.ensure_vxlan(&theirs).await.unwrap_err().to_string();
        assert!(err.contains("not this network's VXLAN link"), "{err}");

        // The same VNI and port under another name: the kernel refuses, the error says why.
        let clash = VxlanSpec { name: "vx-u", owner: "netloom:test:n3", ..spec(4101) };
        let err = format!("{:#}", nl.ensure_vxlan(&clash).await.unwrap_err());
        assert!(err.contains("already uses VNI 4101 with UDP port 4789"), "{err}");
        assert!(nl.link("vx-u").await.unwrap().is_none(), "nothing left behind");

        // A port flag of its own, leaving hairpin alone.
        let bridge = nl.ensure_bridge(&BridgeSpec { name: "br-i", mtu: None, owner: "o" }).await.unwrap();
        let replaced = nl.link("vx-t").await.unwrap().unwrap();
        nl.attach(&replaced, &bridge).await.unwrap();
        nl.configure_bridge_port(&replaced, true, false).await.unwrap();
        nl.set_port_isolated(&replaced, true).await.unwrap();
        let detail = String::from_utf8(
            std::process::Command::new("ip").args(["-d", "link", "show", "vx-t"]).output().unwrap().stdout,
        )
        .unwrap();
        assert!(detail.contains("hairpin on") && detail.contains("isolated on"), "{detail}");

        assert!(nl.delete_link("vx-t").await.unwrap());
    });
}

#[test]
fn fdb_and_neighbour_entries() {
    in_new_netns(|| async {
        underlay("10.99.0.1/24").await;
        let nl = Netlink::connect().unwrap();
        let bridge = nl.ensure_bridge(&BridgeSpec { name: "br-t", mtu: Some(1450), owner: "o" }).await.unwrap();
        let vx = nl.ensure_vxlan(&spec(4200)).await.unwrap();
        nl.attach(&vx, &bridge).await.unwrap();
        let vx = nl.link("vx-t").await.unwrap().unwrap();
        assert!(nl.fdb_entries(&vx).await.unwrap().is_empty(), "the bridge's own entries are not listed");

        let mac = [2, 0x42, 10, 9, 0, 5];
        let entry = FdbEntry { mac, dst: ip("10.99.0.2"), port: None };
        nl.ensure_fdb(&vx, &entry).await.unwrap();
        nl.ensure_fdb(&vx, &entry).await.unwrap();
        assert_eq!(nl.fdb_entries(&vx).await.unwrap(), vec![entry]);
        let moved = FdbEntry { dst: ip("10.99.0.3"), port: Some(8472), ..entry };
        nl.ensure_fdb(&vx, &moved).await.unwrap();
        assert_eq!(nl.fdb_entries(&vx).await.unwrap(), vec![moved], "a MAC that moved is replaced, not added");
        let other = FdbEntry { mac: [2, 0x42, 10, 9, 0, 6], dst: ip("10.99.0.2"), port: None };
        nl.ensure_fdb(&vx, &other).await.unwrap();
        assert_eq!(nl.fdb_entries(&vx).await.unwrap().len(), 2);
        assert!(nl.delete_fdb(&vx, &mac).await.unwrap());
        assert!(!nl.delete_fdb(&vx, &mac).await.unwrap(), "deleting an absent entry succeeds");
        assert_eq!(nl.fdb_entries(&vx).await.unwrap(), vec![other]);

        // Entries added by someone else (iproute2) are listed too.
        let status = std::process::Command::new("bridge")
            .args(["fdb", "add", "02:42:de:ad:be:ef", "dev", "vx-t", "dst", "10.99.0.9", "self", "permanent"])
            .status()
            .unwrap();
        assert!(status.success());
        let foreign = FdbEntry { mac: [2, 0x42, 0xde, 0xad, 0xbe, 0xef], dst: ip("10.99.0.9"), port: None };
        assert_eq!(nl.fdb_entries(&vx).await.unwrap(), vec![other, foreign]);
        assert!(nl.delete_fdb(&vx, &foreign.mac).await.unwrap());

        // What the bridge learned behind the port is separate, and can be forgotten.
        let status = std::process::Command::new("bridge")
            .args(["fdb", "add", "02:42:0a:09:00:09", "dev", "vx-t", "master", "dynamic"])
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(nl.learned_macs(&vx).await.unwrap(), vec![[2, 0x42, 10, 9, 0, 9]]);
        assert_eq!(nl.fdb_entries(&vx).await.unwrap(), vec![other], "learned entries are not the link's own");
        assert!(nl.forget_learned(&vx, &[2, 0x42, 10, 9, 0, 9]).await.unwrap());
        assert!(!nl.forget_learned(&vx, &[2, 0x42, 10, 9, 0, 9]).await.unwrap());
        assert!(nl.learned_macs(&vx).await.unwrap().is_empty());

        let neighbour = NeighbourEntry { ip: ip("10.9.0.5"), mac };
        nl.ensure_neighbour(&vx, &neighbour).await.unwrap();
        nl.ensure_neighbour(&vx, &neighbour).await.unwrap();
        let v6 = NeighbourEntry { ip: ip("fd00:9::5"), mac };
        nl.ensure_neighbour(&vx, &v6).await.unwrap();
        assert_eq!(nl.permanent_neighbours(&vx).await.unwrap(), vec![neighbour, v6]);
        let reused = NeighbourEntry { mac: [2, 0, 0, 0, 0, 7], ..neighbour };
        nl.ensure_neighbour(&vx, &reused).await.unwrap();
        assert_eq!(nl.permanent_neighbours(&vx).await.unwrap(), vec![reused, v6], "a new MAC replaces the old one");
        assert!(nl.delete_neighbour(&vx, neighbour.ip).await.unwrap());
        assert!(!nl.delete_neighbour(&vx, neighbour.ip).await.unwrap());
        assert_eq!(nl.permanent_neighbours(&vx).await.unwrap(), vec![v6]);
    });
}

#[test]
fn namespaces_bound_to_files() {
    in_new_netns(|| async {
        underlay("10.99.0.1/24").await;
        let dir = tempfile_dir();
        let path = dir.join("ns-a");
        let ns = Netns::ensure(&path).unwrap();
        assert_eq!(ns.name(), "ns-a");
        assert_eq!(Netns::ensure(&path).unwrap(), ns, "an existing namespace is reused");
        assert_eq!(Netns::list(&dir).unwrap(), vec![ns.clone()]);
        std::fs::write(dir.join("not-a-namespace"), "").unwrap();
        assert_eq!(Netns::list(&dir).unwrap().len(), 1, "plain files are not namespaces");

        // A VXLAN link inside the namespace, its socket on the underlay here.
        let host = Netlink::connect().unwrap();
        let inner = Netlink::connect_in(&ns).unwrap();
        let links: Vec<String> = inner.links().await.unwrap().into_iter().map(|l| l.name).collect();
        assert_eq!(links, vec!["lo"], "a fresh namespace has only lo");
        let vx = host.ensure_vxlan_in(&spec(4300), &ns, &inner).await.unwrap();
        assert!(vx.up && vx.alias.as_deref() == Some("netloom:test:n1"));
        assert!(host.link("vx-t").await.unwrap().is_none(), "the link is not in the host namespace");
        let again = host.ensure_vxlan_in(&spec(4300), &ns, &inner).await.unwrap();
        assert_eq!(again.index, vx.index);

        // A veth pair across: the bridge end inside, the container end here.
        let veth = VethSpec { host_name: "ve-in", peer_name: "ve-out", mtu: Some(1450), owner: "netloom:test:n1:e1" };
        let (inside, outside) = host.create_veth_across(&veth, &ns, &inner).await.unwrap();
        assert_eq!((inside.mtu, outside.mtu), (1450, 1450));
        assert_eq!(outside.alias.as_deref(), Some("netloom:test:n1:e1"));
        assert!(inner.link("ve-in").await.unwrap().is_some() && host.link("ve-in").await.unwrap().is_none());
        let err = host.create_veth_across(&veth, &ns, &inner).await.unwrap_err().to_string();
        assert!(err.contains("already exists"), "{err}");

        // Knobs inside the namespace.
        let forwarding = ns.run(|| netloom_dataplane::sysctl::read("net.ipv4.ip_forward")).unwrap();
        assert_eq!(forwarding, "0");

        // Deleting the namespace destroys its links, and the veth peer with them, once nothing
        // holds it any more: a netlink socket inside does.
        drop(inner);
        tokio::task::yield_now().await;
        assert!(Netns::delete(&path).unwrap());
        assert!(!Netns::delete(&path).unwrap(), "deleting an absent namespace succeeds");
        assert!(!path.exists());
        let mut gone = false;
        for _ in 0..100 {
            if host.link("ve-out").await.unwrap().is_none() {
                gone = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(gone, "the veth peer went with the namespace");
        // The VNI is free again for a new link once the old namespace is gone.
        let ns = Netns::ensure(&path).unwrap();
        let inner = Netlink::connect_in(&ns).unwrap();
        host.ensure_vxlan_in(&spec(4300), &ns, &inner).await.unwrap();
        Netns::delete(&path).unwrap();
    });
}

/// A directory on a tmpfs mounted over /run in this test's mount namespace only.
fn tempfile_dir() -> std::path::PathBuf {
    nix::mount::mount(Some("tmpfs"), "/run", Some("tmpfs"), nix::mount::MsFlags::empty(), None::<&str>).unwrap();
    let dir = std::path::PathBuf::from("/run/netloom-test/netns");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
