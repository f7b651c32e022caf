//! The bridge bypass's kernel objects: clsact qdiscs bound to a shared block, one redirect per
//! endpoint MAC, kept in line with what is wanted, and gone with the last port.

mod common;

use std::collections::HashMap;

use common::in_new_netns;
use netloom_dataplane::{fastpath_block_of, BridgeSpec, FastPath, Link, Netlink, VethSpec};

async fn port(nl: &Netlink, bridge: &Link, host_name: &str, peer_name: &str) -> Link {
    let host = nl.ensure_veth(&VethSpec { host_name, peer_name, mtu: None, owner: "o" }).await.unwrap().0;
    nl.attach(&host, bridge).await.unwrap();
    host
}

#[test]
fn redirects_follow_the_endpoints_and_leave_nothing() {
    in_new_netns(|| async {
        let nl = Netlink::connect().unwrap();
        let bridge = nl.ensure_bridge(&BridgeSpec { name: "lbr-fp", mtu: None, owner: "o" }).await.unwrap();
        let (a, b) = (port(&nl, &bridge, "vfa", "vfa-p").await, port(&nl, &bridge, "vfb", "vfb-p").await);
        let fast = FastPath::new(nl.clone());
        let block = fastpath_block_of(&bridge);
        let (mac_a, mac_b) = ([2, 0x42, 10, 0, 0, 2], [2, 0x42, 10, 0, 0, 3]);
        assert!(fast.list(block).await.unwrap().is_empty(), "no block before a port is bound");

        fast.attach_port(block, &a).await.unwrap();
        fast.attach_port(block, &a).await.unwrap();
        fast.attach_port(block, &b).await.unwrap();
        assert_eq!(fast.port_block(&a).await.unwrap(), Some(block));
        fast.add(block, &mac_a, &a).await.unwrap();
        fast.add(block, &mac_b, &b).await.unwrap();
        fast.add(block, &mac_b, &b).await.unwrap();
        let mut held: Vec<_> = fast.list(block).await.unwrap().into_iter().map(|e| (e.mac, e.port)).collect();
        held.sort();
        assert_eq!(held, vec![(mac_a, a.index), (mac_b, b.index)], "one redirect per MAC, repeats change nothing");
        assert!(fast.list(block).await.unwrap().iter().all(|e| e.in_its_bucket()), "each in its MAC's bucket");

        // A port bound to another block is bound again to the wanted one.
        fast.attach_port(block + 1, &a).await.unwrap();
        assert_eq!(fast.port_block(&a).await.unwrap(), Some(block + 1));
        fast.attach_port(block, &a).await.unwrap();
        assert_eq!(fast.port_block(&a).await.unwrap(), Some(block));

        // A MAC moved to another port: the old redirect replaced, not doubled.
        fast.add(block, &mac_a, &b).await.unwrap();
        let held: Vec<_> = fast.list(block).await.unwrap().into_iter().filter(|e| e.mac == mac_a).collect();
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].port, b.index);

        // A second process (no cache) puts the block in line with what is wanted.
        let restarted = FastPath::new(nl.clone());
        let wanted = HashMap::from([(mac_a, a.clone())]);
        assert_eq!(restarted.sync(block, &wanted).await.unwrap(), (2, 1), "two stale removed, one added");
        assert_eq!(restarted.sync(block, &wanted).await.unwrap(), (0, 0));

        // A redirect of the single-list layout (in the root table, before the hash table) is
        // replaced by one in its bucket.
        let mac_c = [2, 0x42, 10, 0, 0, 9];
        let old_layout = format!(
            "filter add block {block} ingress pref 20044 protocol all u32 match u16 0x0242 0xffff at -14 \
             match u32 0x0a000009 0xffffffff at -12 action mirred egress redirect dev vfa"
        );
        assert!(std::process::Command::new("tc").args(old_layout.split_whitespace()).status().unwrap().success());
        let old = restarted.list(block).await.unwrap().into_iter().find(|e| e.mac == mac_c).expect("read back");
        assert!(!old.in_its_bucket());
        let wanted = HashMap::from([(mac_a, a.clone()), (mac_c, a.clone())]);
        assert_eq!(restarted.sync(block, &wanted).await.unwrap(), (1, 1), "moved into its bucket");
        assert!(restarted.list(block).await.unwrap().iter().all(|e| e.in_its_bucket()));

        // The root's link to the buckets lost: the redirects are unreachable until sync makes it.
        let show = || {
            let out = std::process::Command::new("tc").args(["filter", "show", "block", &block.to_string()]).output();
            String::from_utf8(out.unwrap().stdout).unwrap()
        };
        assert!(show().contains("link 1:"), "the link node is there:\n{}", show());
        let unlink = format!("filter del block {block} ingress pref 20044 handle 800::1 u32");
        assert!(std::process::Command::new("tc").args(unlink.split_whitespace()).status().unwrap().success());
        assert!(!show().contains("link 1:"), "the link node was removed:\n{}", show());
        assert_eq!(restarted.sync(block, &wanted).await.unwrap(), (0, 0), "the redirects themselves are right");
        assert!(show().contains("link 1:"), "sync made the link node again:\n{}", show());
        restarted.remove(block, &mac_c).await.unwrap();
        restarted.remove(block, &mac_b).await.unwrap();
        restarted.remove(block, &mac_a).await.unwrap();
        assert!(restarted.list(block).await.unwrap().is_empty());
        fast.remove(block, &mac_a).await.unwrap();

        fast.add(block, &mac_b, &b).await.unwrap();
        fast.detach_port(&a).await.unwrap();
        fast.detach_port(&a).await.unwrap();
        assert_eq!(fast.port_block(&a).await.unwrap(), None);
        assert_eq!(fast.list(block).await.unwrap().len(), 1, "the block lives while a port is bound");
        nl.delete_link("vfb").await.unwrap();
        assert!(fast.list(block).await.unwrap().is_empty(), "the block goes with its last port");
    });
}
