//! The tunnel between two hosts made of namespaces: each host is an underlay namespace (joined to
//! the other by a veth pair) plus a tunnel namespace holding its device. Everything lives in a
//! network and mount namespace of the test's own, so nothing reaches the machine's.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipnetwork::IpNetwork;
use netloom_dataplane::{Netlink, Netns, VethSpec};
use netloom_driver_kit::testing::in_new_netns;

use super::*;

const PORT: u16 = 51820;
const UNDERLAY_MTU: u32 = 1500;

struct Host {
    underlay: Netns,
    tunnel_ns: Netns,
    underlay_ip: IpAddr,
    tunnel_ip: IpAddr,
    key: KeyPair,
}

impl Host {
    fn config<'a>(&'a self, tun_path: &'a Path) -> TunnelConfig<'a> {
        TunnelConfig {
            netns: self.tunnel_ns.path(),
            tunnel_ip: self.tunnel_ip,
            tunnel_subnet: "100.64.0.0/10".parse().unwrap(),
            listen: SocketAddr::new(self.underlay_ip, PORT),
            mtu: UNDERLAY_MTU - WIREGUARD_OVERHEAD_V4,
            tun_path,
            underlay_netns: Some(self.underlay.path()),
            mode: WireguardMode::Userspace,
        }
    }

    fn as_peer(&self, name: &str) -> TunnelPeer {
        TunnelPeer {
            host: name.into(),
            public_key: self.key.public,
            endpoint: SocketAddr::new(self.underlay_ip, PORT),
            tunnel_ip: self.tunnel_ip,
        }
    }

    async fn start(&self) -> Tunnel {
        Tunnel::start(&self.config(Path::new(DEFAULT_TUN_PATH)), &self.key).await.unwrap()
    }

    /// A UDP socket in the tunnel namespace on `address` (the tunnel address when None).
    fn tunnel_socket(&self, address: Option<IpAddr>, port: u16) -> UdpSocket {
        let bind = SocketAddr::new(address.unwrap_or(self.tunnel_ip), port);
        udp_in(&self.tunnel_ns, bind)
    }

    async fn device(&self) -> Option<netloom_dataplane::Link> {
        Netlink::connect_in(&self.tunnel_ns).unwrap().link(DEVICE).await.unwrap()
    }
}

fn udp_in(ns: &Netns, bind: SocketAddr) -> UdpSocket {
    let socket = ns.run(move || Ok(UdpSocket::bind(bind)?)).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    socket
}

/// Runs a test in its own network and mount namespaces, with two hosts joined by a veth pair.
fn with_two_hosts<F>(test: F)
where
    F: for<'a> FnOnce(&'a Host, &'a Host) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>>
        + Send
        + 'static,
{
    in_new_netns(|| {
        Box::pin(async move {
            let dir = private_run_dir();
            let a = host(&dir, "a", 1).await;
            let b = host(&dir, "b", 2).await;
            let nl_a = Netlink::connect_in(&a.underlay).unwrap();
            let nl_b = Netlink::connect_in(&b.underlay).unwrap();
            let veth =
                VethSpec { host_name: "ul-b", peer_name: "ul-a", mtu: Some(UNDERLAY_MTU), owner: "netloom:test" };
            let (ul_b, ul_a) = nl_a.create_veth_across(&veth, &b.underlay, &nl_b).await.unwrap();
            for (nl, link, host) in [(&nl_a, &ul_a, &a), (&nl_b, &ul_b, &b)] {
                nl.ensure_address(link, IpNetwork::new(host.underlay_ip, 24).unwrap()).await.unwrap();
                nl.set_up(link).await.unwrap();
            }
            test(&a, &b).await;
        })
    });
}

async fn host(dir: &Path, name: &str, number: u8) -> Host {
    Host {
        underlay: Netns::ensure(dir.join(format!("host-{name}"))).unwrap(),
        tunnel_ns: Netns::ensure(dir.join(format!("tun-{name}"))).unwrap(),
        underlay_ip: IpAddr::from([10, 77, 0, number]),
        tunnel_ip: IpAddr::from([100, 64, 0, number]),
        key: KeyPair::generate().unwrap(),
    }
}

/// A tmpfs on /run seen by this thread only (its bind mounts of namespaces go with it).
fn private_run_dir() -> PathBuf {
    use nix::mount::{mount, MsFlags};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).expect("unshare(CLONE_NEWNS)");
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>).unwrap();
    mount(Some("tmpfs"), "/run", Some("tmpfs"), MsFlags::empty(), None::<&str>).unwrap();
    let dir = PathBuf::from("/run/netloom-tunnel-test");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Sends `payload` every 50 ms until `to_socket` receives it or `within` passes; how many of
/// those arrived (0 = none got through).
fn deliveries(from: &UdpSocket, to_socket: &UdpSocket, payload: &[u8], within: Duration) -> usize {
    let to = to_socket.local_addr().unwrap();
    let deadline = Instant::now() + within;
    let mut arrived = 0;
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        from.send_to(payload, to).unwrap();
        while let Ok((len, _)) = to_socket.recv_from(&mut buf) {
            if &buf[..len] == payload {
                arrived += 1;
            }
        }
        if arrived > 0 {
            return arrived;
        }
    }
    arrived
}

fn delivered_within(from: &UdpSocket, to: &UdpSocket, payload: &[u8], within: Duration) -> bool {
    deliveries(from, to, payload, within) > 0
}

/// A raw capture of every frame on an interface of `ns`.
struct Capture {
    socket: OwnedFd,
}

impl Capture {
    fn on(ns: &Netns, interface: &'static str) -> Capture {
        let fd = ns
            .run(move || {
                let all = (libc::ETH_P_ALL as u16).to_be();
                // SAFETY: plain socket(2)/bind(2) calls on a socket this closure owns.
                unsafe {
                    let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK, all as i32);
                    assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
                    let socket = OwnedFd::from_raw_fd(fd);
                    let name = std::ffi::CString::new(interface).unwrap();
                    let mut address: libc::sockaddr_ll = std::mem::zeroed();
                    address.sll_family = libc::AF_PACKET as u16;
                    address.sll_protocol = all;
                    address.sll_ifindex = libc::if_nametoindex(name.as_ptr()) as i32;
                    assert!(address.sll_ifindex > 0, "no interface {interface}");
                    let rc = libc::bind(
                        fd,
                        &address as *const libc::sockaddr_ll as *const libc::sockaddr,
                        std::mem::size_of::<libc::sockaddr_ll>() as u32,
                    );
                    assert_eq!(rc, 0, "binding the capture: {}", std::io::Error::last_os_error());
                    Ok(socket)
                }
            })
            .unwrap();
        Capture { socket: fd }
    }

    /// (frames seen, frames containing `marker`) since the last call.
    fn drain(&self, marker: &[u8]) -> (usize, usize) {
        let mut frame = vec![0u8; 65536];
        let (mut frames, mut hits) = (0, 0);
        loop {
            // SAFETY: reading into a buffer of the length given.
            let len = unsafe { libc::recv(self.socket.as_raw_fd(), frame.as_mut_ptr().cast(), frame.len(), 0) };
            if len <= 0 {
                return (frames, hits);
            }
            frames += 1;
            if frame[..len as usize].windows(marker.len()).any(|w| w == marker) {
                hits += 1;
            }
        }
    }
}

#[test]
fn traffic_crosses_the_tunnel_sealed_and_only_between_known_peers() {
    with_two_hosts(|a, b| {
        Box::pin(async move {
            let (tunnel_a, tunnel_b) = (a.start().await, b.start().await);
            assert_eq!(tunnel_a.kind(), TunnelKind::Userspace);
            let device = a.device().await.expect("the device is in the tunnel namespace");
            assert_eq!(device.mtu, UNDERLAY_MTU - WIREGUARD_OVERHEAD_V4);
            assert!(Netlink::connect_in(&a.underlay).unwrap().link(DEVICE).await.unwrap().is_none());

            let (sender, receiver) = (a.tunnel_socket(None, 0), b.tunnel_socket(None, 7000));
            assert!(
                !delivered_within(&sender, &receiver, b"before any peer", Duration::from_millis(300)),
                "a tunnel without peers carries nothing"
            );
            tunnel_a.set_peers(&[b.as_peer("b")]).unwrap();
            tunnel_b.set_peers(&[a.as_peer("a")]).unwrap();

            // The capture works: a marker sent in clear over the underlay is seen.
            let capture = Capture::on(&a.underlay, "ul-a");
            let marker = b"netloom-secret-marker-7f3a";
            let clear_from = udp_in(&a.underlay, SocketAddr::new(a.underlay_ip, 0));
            let clear_to = udp_in(&b.underlay, SocketAddr::new(b.underlay_ip, 9000));
            assert!(delivered_within(&clear_from, &clear_to, marker, Duration::from_secs(2)));
            let (frames, hits) = capture.drain(marker);
            assert!(frames > 0 && hits > 0, "the capture sees clear traffic: {frames} frames, {hits} hits");

            // Through the tunnel it arrives, and the underlay never shows it.
            assert!(delivered_within(&sender, &receiver, marker, Duration::from_secs(2)), "tunnel delivers");
            let back = a.tunnel_socket(None, 7001);
            assert!(delivered_within(&receiver, &back, marker, Duration::from_secs(1)), "and back");
            let (frames, hits) = capture.drain(marker);
            println!("underlay capture during tunnel traffic: {frames} frames, {hits} with the marker");
            assert!(frames > 0, "the tunnel's datagrams crossed the captured link");
            assert_eq!(hits, 0, "the marker appeared in clear on the underlay");
            let stats = tunnel_b.stats();
            assert!(stats.rx_packets > 0 && stats.handshakes > 0, "{stats:?}");

            // A packet whose inner source is not the peer's tunnel address is refused.
            let spoofed = IpAddr::from([100, 64, 0, 99]);
            let nl_tun_a = Netlink::connect_in(&a.tunnel_ns).unwrap();
            let device = nl_tun_a.link(DEVICE).await.unwrap().unwrap();
            nl_tun_a.ensure_address(&device, IpNetwork::new(spoofed, 32).unwrap()).await.unwrap();
            let spoofer = a.tunnel_socket(Some(spoofed), 0);
            let dropped = tunnel_b.stats().dropped;
            let through = deliveries(&spoofer, &receiver, b"spoofed source", Duration::from_millis(500));
            assert_eq!(through, 0, "packets from a foreign inner source got through");
            assert!(tunnel_b.stats().dropped > dropped, "the spoofed packets were counted as dropped");

            // Datagrams from an endpoint that is no peer are dropped and counted.
            let stranger = udp_in(&a.underlay, SocketAddr::new(a.underlay_ip, 0));
            let dropped = tunnel_b.stats().dropped;
            for _ in 0..5 {
                stranger.send_to(&[1u8; 148], SocketAddr::new(b.underlay_ip, PORT)).unwrap();
            }
            std::thread::sleep(Duration::from_millis(200));
            assert!(tunnel_b.stats().dropped >= dropped + 5, "{:?}", tunnel_b.stats());

            // A removed peer gets nothing any more.
            assert!(delivered_within(&sender, &receiver, b"still a peer", Duration::from_secs(1)));
            tunnel_b.set_peers(&[]).unwrap();
            let through = deliveries(&sender, &receiver, b"removed peer", Duration::from_millis(600));
            assert_eq!(through, 0, "a removed peer's packets got through");

            tunnel_a.remove().await.unwrap();
            tunnel_b.remove().await.unwrap();
            assert!(a.device().await.is_none() && b.device().await.is_none(), "remove leaves no device");
        })
    });
}

/// Both tunnels started and peered, shown to carry a datagram from A to B; with the sockets.
async fn joined(a: &Host, b: &Host) -> (Tunnel, Tunnel, UdpSocket, UdpSocket) {
    let (tunnel_a, tunnel_b) = (a.start().await, b.start().await);
    tunnel_a.set_peers(&[b.as_peer("b")]).unwrap();
    tunnel_b.set_peers(&[a.as_peer("a")]).unwrap();
    let (sender, receiver) = (a.tunnel_socket(None, 0), b.tunnel_socket(None, 7000));
    assert!(delivered_within(&sender, &receiver, b"first", Duration::from_secs(2)), "the tunnel carries");
    (tunnel_a, tunnel_b, sender, receiver)
}

#[test]
fn a_rotated_key_is_used_once_the_peer_knows_it() {
    with_two_hosts(|a, b| {
        Box::pin(async move {
            let (tunnel_a, tunnel_b, sender, receiver) = joined(a, b).await;

            let rotated = Host { key: KeyPair::generate().unwrap(), ..clone_host(a) };
            tunnel_a.set_key(&rotated.key).unwrap();
            // The peer still expects the old key: nothing gets through.
            let through = deliveries(&sender, &receiver, b"unknown new key", Duration::from_millis(500));
            assert_eq!(through, 0, "traffic sealed with a key the peer does not know got through");

            let started = Instant::now();
            tunnel_b.set_peers(&[rotated.as_peer("a")]).unwrap();
            assert!(delivered_within(&sender, &receiver, b"new key", Duration::from_secs(1)), "A -> B after rotation");
            let back = a.tunnel_socket(None, 7001);
            assert!(
                delivered_within(&receiver, &back, b"new key back", Duration::from_secs(1)),
                "B -> A after rotation"
            );
            println!("traffic flowed again {:?} after the peer learnt the new key", started.elapsed());
        })
    });
}

fn clone_host(host: &Host) -> Host {
    Host {
        underlay: host.underlay.clone(),
        tunnel_ns: host.tunnel_ns.clone(),
        underlay_ip: host.underlay_ip,
        tunnel_ip: host.tunnel_ip,
        key: KeyPair::from_secret(host.key.secret),
    }
}

#[test]
fn a_leftover_device_is_replaced_and_failures_leave_nothing() {
    with_two_hosts(|a, _b| {
        Box::pin(async move {
            // No TUN clone device: a clear error, and no device made.
            let missing = Path::new("/run/netloom-tunnel-test/no-tun");
            let err = Tunnel::start(&a.config(missing), &a.key).await.err().expect("no TUN device, no tunnel");
            let message = format!("{err:#}");
            assert!(message.contains("no-tun") && message.contains("TUN"), "{message}");
            assert!(a.device().await.is_none());

            // The WireGuard port already taken: a clear error, and no device left.
            let squatter = udp_in(&a.underlay, SocketAddr::new(a.underlay_ip, PORT));
            let err = Tunnel::start(&a.config(Path::new(DEFAULT_TUN_PATH)), &a.key).await.err().expect("port taken");
            assert!(format!("{err:#}").contains(&format!("{}:{PORT}", a.underlay_ip)), "{err:#}");
            assert!(a.device().await.is_none(), "a failed start left the device");
            drop(squatter);

            // A device of the name held by someone else (an earlier run) is replaced.
            let leftover = tun::open_in(&a.tunnel_ns, Path::new(DEFAULT_TUN_PATH), DEVICE).unwrap();
            let old_index = a.device().await.unwrap().index;
            let tunnel = a.start().await;
            let device = a.device().await.unwrap();
            assert_ne!(device.index, old_index);
            assert!(device.up);
            drop(leftover);
            tunnel.remove().await.unwrap();
            assert!(a.device().await.is_none());
        })
    });
}

/// Throughput figures for the report (not asserted: the machine is shared): TCP through the
/// tunnel against TCP over the bare underlay, and TCP over VXLAN through the tunnel (what an
/// encrypted network carries) against TCP over VXLAN on the underlay (a plain network).
#[test]
fn tcp_throughput_through_the_tunnel() {
    with_two_hosts(|a, b| {
        Box::pin(async move {
            let (tunnel_a, _tunnel_b, _, _) = joined(a, b).await;
            let clear = tcp_rate(&a.underlay, &b.underlay, a.underlay_ip, b.underlay_ip);
            let sealed = tcp_rate(&a.tunnel_ns, &b.tunnel_ns, a.tunnel_ip, b.tunnel_ip);
            println!(
                "TCP over the underlay: {clear:.0} Mbit/s; through the tunnel: {sealed:.0} Mbit/s ({:.2}x); {:?}",
                sealed / clear,
                tunnel_a.stats()
            );
            let dir = a.underlay.path().parent().unwrap().to_path_buf();
            let plain = [
                (a, "plain-a", a.underlay.clone(), a.underlay_ip, 1),
                (b, "plain-b", b.underlay.clone(), b.underlay_ip, 2),
            ];
            let plain_ends = vxlan_pair(&dir, plain, UNDERLAY_MTU - 50).await;
            let secret = [
                (a, "secret-a", a.tunnel_ns.clone(), a.tunnel_ip, 1),
                (b, "secret-b", b.tunnel_ns.clone(), b.tunnel_ip, 2),
            ];
            let secret_ends = vxlan_pair(&dir, secret, UNDERLAY_MTU - WIREGUARD_OVERHEAD_V4 - 50).await;
            let inner = |n: u8| IpAddr::from([192, 168, 50, n]);
            let plain_rate = tcp_rate(&plain_ends[0], &plain_ends[1], inner(1), inner(2));
            let secret_rate = tcp_rate(&secret_ends[0], &secret_ends[1], inner(1), inner(2));
            println!(
                "TCP over VXLAN on the underlay: {plain_rate:.0} Mbit/s; over VXLAN through the tunnel: {secret_rate:.0} \
                 Mbit/s ({:.2}x)",
                secret_rate / plain_rate
            );
            assert!(sealed > 0.0 && secret_rate > 0.0);
        })
    });
}

/// A VXLAN link per host made from `made_in` (its socket stays there, sending from `local`) and
/// moved into a namespace of its own, with 192.168.50.<n>/24 and the other end's MAC known (FDB
/// and neighbour entries); the two namespaces.
async fn vxlan_pair(dir: &Path, hosts: [(&Host, &str, Netns, IpAddr, u8); 2], mtu: u32) -> [Netns; 2] {
    let mut ends = Vec::new();
    for (_, name, made_in, local, n) in &hosts {
        let end = Netns::ensure(dir.join(name)).unwrap();
        let (outer, inner) = (Netlink::connect_in(made_in).unwrap(), Netlink::connect_in(&end).unwrap());
        let spec = netloom_dataplane::VxlanSpec {
            name: "vx-bench",
            vni: 77,
            local: *local,
            port: 4789,
            mtu: Some(mtu),
            proxy_arp: false,
            owner: "netloom:test",
        };
        let link = outer.ensure_vxlan_in(&spec, &end, &inner).await.unwrap();
        let address = IpAddr::from([192, 168, 50, *n]);
        inner.ensure_address(&link, IpNetwork::new(address, 24).unwrap()).await.unwrap();
        inner.set_up(&link).await.unwrap();
        ends.push((end, inner, link, address, *local));
    }
    for (i, (_, inner, link, _, _)) in ends.iter().enumerate() {
        let (_, _, other, other_address, other_local) = &ends[1 - i];
        let mac: [u8; 6] = other.mac.clone().try_into().unwrap();
        let fdb = netloom_dataplane::FdbEntry { mac, dst: *other_local, port: None };
        inner.ensure_fdb(link, &fdb).await.unwrap();
        let neighbour = netloom_dataplane::NeighbourEntry { ip: *other_address, mac };
        inner.ensure_neighbour(link, &neighbour).await.unwrap();
    }
    [ends[0].0.clone(), ends[1].0.clone()]
}

/// Mbit/s of one TCP stream from `from_ip` (in `from`) to `to_ip` (in `to`) over two seconds.
fn tcp_rate(from: &Netns, to: &Netns, from_ip: IpAddr, to_ip: IpAddr) -> f64 {
    let listener = to.run(move || Ok(TcpListener::bind(SocketAddr::new(to_ip, 0))?)).unwrap();
    let target = listener.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        while let Ok(len) = stream.read(&mut buf) {
            if len == 0 {
                break;
            }
            total += len as u64;
        }
        total
    });
    let mut stream = from
        .run(move || {
            let socket = std::net::TcpStream::connect_timeout(&target, Duration::from_secs(5))?;
            let _ = from_ip;
            Ok::<TcpStream, anyhow::Error>(socket)
        })
        .unwrap();
    let chunk = vec![0x5au8; 1 << 16];
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        stream.write_all(&chunk).unwrap();
    }
    drop(stream);
    let total = reader.join().unwrap();
    total as f64 * 8.0 / started.elapsed().as_secs_f64() / 1e6
}

/// The kernel's WireGuard between two hosts, where the kernel has it: datagrams cross, only
/// between the configured peers, and a rotated key is used once the peer knows it. This
/// machine's kernel has no WireGuard, so here the test only says it was skipped.
#[test]
fn kernel_wireguard_between_two_hosts_skipped_without_kernel_wireguard() {
    with_two_hosts(|a, b| {
        Box::pin(async move {
            let probe = Netlink::connect_in(&a.underlay).unwrap();
            if !probe.kernel_has_wireguard("loomwgprobe").await.unwrap() {
                println!("SKIPPED: this kernel has no WireGuard (CONFIG_WIREGUARD); the kernel path is not exercised");
                return;
            }
            let (mut config_a, mut config_b) =
                (a.config(Path::new(DEFAULT_TUN_PATH)), b.config(Path::new(DEFAULT_TUN_PATH)));
            config_a.mode = WireguardMode::Kernel;
            config_b.mode = WireguardMode::Kernel;
            let tunnel_a = Tunnel::start(&config_a, &a.key).await.unwrap();
            let tunnel_b = Tunnel::start(&config_b, &b.key).await.unwrap();
            assert_eq!(tunnel_a.kind(), TunnelKind::Kernel);
            let (sender, receiver) = (a.tunnel_socket(None, 0), b.tunnel_socket(None, 7000));
            assert_eq!(deliveries(&sender, &receiver, b"no peers yet", Duration::from_millis(500)), 0);
            tunnel_a.set_peers(&[b.as_peer("b")]).unwrap();
            tunnel_b.set_peers(&[a.as_peer("a")]).unwrap();
            assert!(delivered_within(&sender, &receiver, b"kernel", Duration::from_secs(3)), "the tunnel carries");
            assert!(tunnel_a.stats().tx_bytes > 0 && tunnel_b.stats().rx_bytes > 0);

            let rotated = KeyPair::generate().unwrap();
            tunnel_a.set_key(&rotated).unwrap();
            let mut a_rotated = a.as_peer("a");
            a_rotated.public_key = rotated.public;
            tunnel_b.set_peers(&[a_rotated]).unwrap();
            assert!(delivered_within(&sender, &receiver, b"rotated", Duration::from_secs(3)), "after rotation");

            tunnel_a.remove().await.unwrap();
            tunnel_b.remove().await.unwrap();
            assert!(a.device().await.is_none() && b.device().await.is_none(), "no device left");
        })
    });
}
