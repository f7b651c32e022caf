use std::net::SocketAddr;
use std::time::Duration;

use super::*;

fn listen() -> SocketAddr {
    "192.0.2.10:53".parse().unwrap()
}

fn addrs(list: &[&str]) -> Vec<SocketAddr> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

#[test]
fn nameserver_lines_are_read_in_order_on_port_53() {
    let text = "\
# generated
search example.com
nameserver 192.0.2.1
options ndots:2
nameserver 2001:db8::53   # second
  nameserver\t198.51.100.7
";
    assert_eq!(nameservers(text, listen()), addrs(&["192.0.2.1:53", "[2001:db8::53]:53", "198.51.100.7:53"]));
}

#[test]
fn comments_bad_lines_and_duplicates_are_skipped() {
    let text = "\
#nameserver 192.0.2.1
; nameserver 192.0.2.2
nameserver
nameserver not-an-address
nameserverx 192.0.2.3
domain nameserver
nameserver 192.0.2.4;comment
nameserver 192.0.2.4
";
    assert_eq!(nameservers(text, listen()), addrs(&["192.0.2.4:53"]));
}

#[test]
fn our_own_address_and_dockers_embedded_resolver_are_skipped() {
    let text = "nameserver 192.0.2.10\nnameserver 127.0.0.11\nnameserver 127.0.0.53\n";
    assert_eq!(nameservers(text, listen()), addrs(&["127.0.0.53:53"]));
    // On another port, the same address is another server.
    assert_eq!(nameservers(text, "192.0.2.10:5353".parse().unwrap()), addrs(&["192.0.2.10:53", "127.0.0.53:53"]));
}

#[test]
fn an_ipv6_zone_is_kept_as_the_scope() {
    let loopback = nix::net::if_::if_nametoindex("lo").unwrap();
    let text = "nameserver fe80::1%lo\nnameserver fe80::2%7\nnameserver fe80::3%no-such-interface0\n";
    let found = nameservers(text, listen());
    let scopes: Vec<(String, u32)> = found
        .iter()
        .map(|a| match a {
            SocketAddr::V6(v6) => (v6.ip().to_string(), v6.scope_id()),
            SocketAddr::V4(_) => panic!("{a}"),
        })
        .collect();
    assert_eq!(scopes, vec![("fe80::1".to_string(), loopback), ("fe80::2".to_string(), 7)]);
}

#[test]
fn the_file_is_read_again_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resolv.conf");
    std::fs::write(&path, "nameserver 192.0.2.1\n").unwrap();
    let upstreams = Upstreams::from_resolv_conf(path.clone(), listen());
    assert_eq!(*upstreams.current(), *addrs(&["192.0.2.1:53"]));

    // Same length, written in place: the modification time tells.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&path, "nameserver 192.0.2.2\n").unwrap();
    assert_eq!(*upstreams.current(), *addrs(&["192.0.2.2:53"]));

    // Replaced by a rename, as resolvconf tools do.
    let next = dir.path().join("resolv.conf.new");
    std::fs::write(&next, "nameserver 198.51.100.1\nnameserver 198.51.100.2\n").unwrap();
    std::fs::rename(&next, &path).unwrap();
    assert_eq!(*upstreams.current(), *addrs(&["198.51.100.1:53", "198.51.100.2:53"]));

    std::fs::remove_file(&path).unwrap();
    assert!(upstreams.current().is_empty());
    std::fs::write(&path, "nameserver 192.0.2.3\n").unwrap();
    assert_eq!(*upstreams.current(), *addrs(&["192.0.2.3:53"]));
}

#[test]
fn a_missing_file_means_no_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let upstreams = Upstreams::from_resolv_conf(dir.path().join("absent"), listen());
    assert!(upstreams.current().is_empty());
}
