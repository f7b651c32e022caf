//! The userspace WireGuard data path: boringtun sessions between a TUN device and a UDP socket,
//! served by three OS threads (TUN -> peers, peers -> TUN, timers). Blocking threads rather than
//! async tasks: every packet is one read, one seal or open and one write, and the runtime's
//! threads must stay free for the driver's API.

use std::collections::HashMap;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519;
use tracing::{debug, info, warn};

use super::coalesce::{Coalescer, Written};
use super::gso::{self, Outbox};
use super::merge::Merger;
use super::segment::{self, VnetHeader};
use super::{tun, usable_peers, KeyPair, PublicKey, TunnelPeer, TunnelStats};

/// How often a stopped engine's threads notice, and how often session timers run.
const TICK: Duration = Duration::from_millis(250);
/// Largest IP packet a TUN device hands over (a segmentation-offload one included).
const MAX_PACKET: usize = 65_535;
/// Room to read one packet into: its virtio header, the packet and some slack.
const READ_BUFFER: usize = 1 << 17;
/// Largest sealed message of one packet of the device's MTU, and a handshake.
const MAX_SEALED: usize = 1500 + DATA_OVERHEAD + 148;
/// WireGuard's data message: 16 bytes of header, the sealed packet, a 16-byte tag.
const DATA_OVERHEAD: usize = 32;
const DATA_MESSAGE: u8 = 4;
const HANDSHAKE_INIT: u8 = 1;
const HANDSHAKE_RESPONSE: u8 = 2;
/// Room for any message boringtun writes (a handshake initiation is the largest short one).
const OUT_BUFFER: usize = MAX_PACKET + DATA_OVERHEAD + 148;
/// Packets sealed before the batch is sent.
const BATCH: usize = 64;

/// One peer host: its session state behind its own lock.
struct Peer {
    config: TunnelPeer,
    tunn: Mutex<Tunn>,
}

impl Peer {
    fn session(&self) -> MutexGuard<'_, Tunn> {
        // A panic while holding the lock leaves boringtun's state usable; keep serving.
        self.tunn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The peers, looked up by tunnel address (sending) and by endpoint (receiving). Replaced whole.
#[derive(Default)]
struct PeerTable {
    by_tunnel_ip: HashMap<IpAddr, Arc<Peer>>,
    by_endpoint: HashMap<SocketAddr, Arc<Peer>>,
}

#[derive(Default)]
struct Counters {
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    dropped: AtomicU64,
    handshakes: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

struct Shared {
    tun: File,
    /// Where merged runs of opened packets go (see `merge`), with its MAC address.
    inbound: Option<(File, [u8; 6])>,
    /// Size of the virtio header before each packet on the device (which says how to cut it).
    vnet_len: usize,
    udp: UdpSocket,
    own_tunnel_ip: IpAddr,
    peers: RwLock<Arc<PeerTable>>,
    key: Mutex<x25519::StaticSecret>,
    next_index: AtomicU32,
    counters: Counters,
    stop: AtomicBool,
}

/// Opened packets on their way to the device, with what reached it.
struct Delivery {
    coalescer: Coalescer,
    merger: Option<Merger>,
    written: Written,
}

/// One of the engine's threads.
type Loop = fn(&Shared);

/// The running data path; dropping it stops the threads (the TUN device goes with its file).
pub(crate) struct Engine {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Engine {
    pub(crate) fn start(
        tun: File,
        inbound: Option<(File, [u8; 6])>,
        udp: UdpSocket,
        own_tunnel_ip: IpAddr,
        key: &KeyPair,
    ) -> Result<Engine> {
        udp.set_read_timeout(Some(TICK)).context("setting the WireGuard socket's read timeout")?;
        tun::set_nonblocking(&tun).context("making the tunnel device non-blocking")?;
        let vnet_len = tun::enable_offloads(&tun);
        if !gso::enable_gro(&udp) {
            debug!("no UDP GRO on the WireGuard socket: datagrams arrive one by one");
        }
        let shared = Arc::new(Shared {
            tun,
            inbound,
            vnet_len,
            udp,
            own_tunnel_ip,
            peers: RwLock::default(),
            key: Mutex::new(key.static_secret()),
            next_index: AtomicU32::new(first_session_index()),
            counters: Counters::default(),
            stop: AtomicBool::new(false),
        });
        let mut engine = Engine { shared, threads: Vec::new() };
        let loops: [(&str, Loop); 3] =
            [("wg-tun", Shared::tun_loop), ("wg-udp", Shared::udp_loop), ("wg-timers", Shared::timer_loop)];
        for (name, body) in loops {
            let shared = engine.shared.clone();
            let thread = std::thread::Builder::new()
                .name(name.to_string())
                .spawn(move || body(&shared))
                .with_context(|| format!("starting thread {name}"))?;
            engine.threads.push(thread);
        }
        Ok(engine)
    }

    /// Replaces the peer set; a peer whose key, endpoint and tunnel address are unchanged keeps
    /// its sessions. Peers that would be ambiguous (the same tunnel address or endpoint as one
    /// before them, or this host's own address) are left out with a warning.
    pub(crate) fn set_peers(&self, peers: &[TunnelPeer]) {
        let old = self.shared.table();
        let mut table = PeerTable::default();
        let mut fresh = Vec::new();
        for wanted in usable_peers(peers, self.shared.own_tunnel_ip) {
            let peer = match old.by_tunnel_ip.get(&wanted.tunnel_ip) {
                Some(kept) if kept.config == *wanted => kept.clone(),
                _ => {
                    let peer = Arc::new(self.shared.new_peer(wanted.clone()));
                    fresh.push(peer.clone());
                    peer
                }
            };
            table.by_tunnel_ip.insert(wanted.tunnel_ip, peer.clone());
            table.by_endpoint.insert(wanted.endpoint, peer);
        }
        let count = table.by_tunnel_ip.len();
        *self.shared.peers.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(table);
        // Greet new and changed peers at once: after a key change on either side, traffic flows
        // again after one round trip instead of after the next handshake retry.
        let mut out = vec![0u8; 256];
        for peer in &fresh {
            self.shared.initiate(peer, &mut out);
        }
        debug!(peers = count, new = fresh.len(), "tunnel peers set");
    }

    /// A new own key: every session starts over with it (one handshake per peer).
    pub(crate) fn set_key(&self, key: &KeyPair) {
        let secret = key.static_secret();
        let public = x25519::PublicKey::from(&secret);
        *self.shared.key.lock().unwrap_or_else(|p| p.into_inner()) = secret.clone();
        let table = self.shared.table();
        let mut out = vec![0u8; 256];
        for peer in table.by_tunnel_ip.values() {
            peer.session().set_static_private(secret.clone(), public, None);
            self.shared.initiate(peer, &mut out);
        }
        info!(public_key = %key.public, peers = table.by_tunnel_ip.len(), "tunnel key replaced");
    }

    pub(crate) fn stats(&self) -> TunnelStats {
        let c = &self.shared.counters;
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        TunnelStats {
            tx_packets: read(&c.tx_packets),
            tx_bytes: read(&c.tx_bytes),
            rx_packets: read(&c.rx_packets),
            rx_bytes: read(&c.rx_bytes),
            dropped: read(&c.dropped),
            handshakes: read(&c.handshakes),
        }
    }

    /// The public keys of the peers in service (for status).
    pub(crate) fn peer_keys(&self) -> Vec<PublicKey> {
        self.shared.table().by_tunnel_ip.values().map(|p| p.config.public_key).collect()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Session indexes start at a random point so a restarted engine's indexes differ from the
/// last run's, which peers may still have sessions for.
fn first_session_index() -> u32 {
    let mut bytes = [0u8; 4];
    let _ = File::open("/dev/urandom").and_then(|mut r| r.read_exact(&mut bytes));
    u32::from_ne_bytes(bytes) & 0x00ff_ffff
}

impl Shared {
    fn table(&self) -> Arc<PeerTable> {
        self.peers.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn new_peer(&self, config: TunnelPeer) -> Peer {
        let secret = self.key.lock().unwrap_or_else(|p| p.into_inner()).clone();
        // boringtun keeps 24 bits of the index (the low 8 are its session counter).
        let index = self.next_index.fetch_add(1, Ordering::Relaxed) & 0x00ff_ffff;
        let tunn = Tunn::new(secret, x25519::PublicKey::from(config.public_key.0), None, None, index, None);
        Peer { config, tunn: Mutex::new(tunn) }
    }

    fn initiate(&self, peer: &Peer, out: &mut [u8]) {
        let mut session = peer.session();
        if let TunnResult::WriteToNetwork(message) = session.format_handshake_initiation(out, false) {
            self.send(message, peer.config.endpoint);
        }
    }

    /// Sends one WireGuard message.
    fn send(&self, message: &[u8], to: SocketAddr) {
        match self.udp.send_to(message, to) {
            Ok(_) => self.count_sent(message),
            Err(e) => {
                bump(&self.counters.dropped, 1);
                debug!(to = %to, error = %e, "sending a WireGuard message failed");
            }
        }
    }

    /// Data messages count as sent packets (keepalives and handshakes do not).
    fn count_sent(&self, message: &[u8]) {
        if message.first() == Some(&DATA_MESSAGE) && message.len() > DATA_OVERHEAD {
            bump(&self.counters.tx_packets, 1);
            bump(&self.counters.tx_bytes, (message.len() - DATA_OVERHEAD) as u64);
        }
    }

    /// Packets from the tunnel namespace, sealed for the peer that owns their destination. The
    /// device is read until it is empty (or a batch is full), then the batch leaves at once. A
    /// large packet (segmentation offload) is cut into wire-sized ones first.
    fn tun_loop(&self) {
        let mut buffer = vec![0u8; READ_BUFFER];
        let mut scratch = Vec::with_capacity(2048);
        let mut outbox = Outbox::new(BATCH * (1500 + DATA_OVERHEAD) + OUT_BUFFER);
        let mut table = self.table();
        while !self.stopping() {
            let len = match (&self.tun).read(&mut buffer) {
                Ok(len) => len,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.flush(&mut outbox);
                    if tun::wait_readable(&self.tun, TICK) {
                        table = self.table();
                    }
                    continue;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!(error = %e, "reading the tunnel device failed");
                    std::thread::sleep(TICK);
                    continue;
                }
            };
            if len <= self.vnet_len {
                continue;
            }
            if len == buffer.len() {
                // Possibly cut short (a device set up for larger packets than IPv4 carries).
                bump(&self.counters.dropped, 1);
                debug!(len, "a packet from the tunnel device filled the whole read buffer; dropped");
                continue;
            }
            let (header, packet) = buffer[..len].split_at_mut(self.vnet_len);
            let Some(peer) = Tunn::dst_address(packet).and_then(|dst| table.by_tunnel_ip.get(&dst)) else {
                bump(&self.counters.dropped, 1);
                continue;
            };
            let header = VnetHeader::parse(header);
            if header.is_plain() {
                self.seal(peer, packet, &mut outbox);
                continue;
            }
            let cut = segment::for_each_segment(&header, packet, &mut scratch, |segment| {
                self.seal(peer, segment, &mut outbox);
            });
            if let Err(refused) = cut {
                bump(&self.counters.dropped, 1);
                debug!(?refused, ?header, "a packet from the tunnel device could not be cut");
            }
        }
    }

    /// Seals one packet into the outbox, sending the batch when it is full.
    fn seal(&self, peer: &Peer, packet: &[u8], outbox: &mut Outbox) {
        if outbox.free() < packet.len() + MAX_SEALED {
            self.flush(outbox);
        }
        let sealed = match peer.session().encapsulate(packet, outbox.room()) {
            TunnResult::WriteToNetwork(message) => Some(message.len()),
            TunnResult::Err(e) => {
                bump(&self.counters.dropped, 1);
                debug!(host = %peer.config.host, error = ?e, "sealing a packet failed");
                None
            }
            // Queued until the handshake completes.
            _ => None,
        };
        if let Some(len) = sealed {
            outbox.push(peer.config.endpoint, len);
        }
        if outbox.len() >= BATCH || outbox.free() < OUT_BUFFER {
            self.flush(outbox);
        }
    }

    fn flush(&self, outbox: &mut Outbox) {
        if outbox.is_empty() {
            return;
        }
        let (_, lost) = outbox.flush(&self.udp, |message| self.count_sent(message));
        bump(&self.counters.dropped, lost as u64);
    }

    /// Datagrams from peers (several at a time when the kernel coalesced them), opened and
    /// written to the tunnel namespace. Only known endpoints are heard, and a peer may only send
    /// packets from its own tunnel address.
    fn udp_loop(&self) {
        let mut datagrams = vec![0u8; 1 << 18];
        let mut out = vec![0u8; OUT_BUFFER];
        let merger = self.inbound.as_ref().map(|(_, mac)| Merger::new(*mac));
        let mut delivery = Delivery { coalescer: Coalescer::new(self.vnet_len), merger, written: Written::default() };
        // Opened packets are written once the socket has nothing more to give, so that a run
        // the sender had to split over two sends is merged whole.
        let mut holding = false;
        while !self.stopping() {
            let flags = if holding { libc::MSG_DONTWAIT } else { 0 };
            let (len, from, segment) = match gso::recv(&self.udp, &mut datagrams, flags) {
                Ok(received) => received,
                Err(e) if holding && e.kind() == ErrorKind::WouldBlock => {
                    self.deliver(&mut delivery);
                    holding = false;
                    continue;
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {
                    continue
                }
                Err(e) => {
                    warn!(error = %e, "receiving on the WireGuard socket failed");
                    std::thread::sleep(TICK);
                    continue;
                }
            };
            let Some(peer) = self.table().by_endpoint.get(&from).cloned() else {
                bump(&self.counters.dropped, datagrams[..len].chunks(segment.max(1)).count() as u64);
                continue;
            };
            for datagram in datagrams[..len].chunks(segment.max(1)) {
                self.open(&peer, from, datagram, &mut out, &mut delivery);
            }
            holding = true;
        }
    }

    /// Opens one datagram; a packet in it goes to `coalescer` if its sender is the peer's
    /// tunnel address (a peer may not speak for others).
    fn open(&self, peer: &Peer, from: SocketAddr, datagram: &[u8], out: &mut [u8], into: &mut Delivery) {
        let mut session = peer.session();
        let mut input = datagram;
        let mut source = Some(from.ip());
        loop {
            let (packet, sender) = match session.decapsulate(source, input, out) {
                TunnResult::WriteToNetwork(message) => {
                    if matches!(datagram.first(), Some(&HANDSHAKE_INIT) | Some(&HANDSHAKE_RESPONSE)) && source.is_some()
                    {
                        bump(&self.counters.handshakes, 1);
                    }
                    self.send(message, peer.config.endpoint);
                    // Then whatever waited for the session, until boringtun says done.
                    input = &[];
                    source = None;
                    continue;
                }
                TunnResult::WriteToTunnelV4(packet, sender) => (packet, IpAddr::V4(sender)),
                TunnResult::WriteToTunnelV6(packet, sender) => (packet, IpAddr::V6(sender)),
                TunnResult::Done => return,
                TunnResult::Err(e) => {
                    if source.is_some() {
                        bump(&self.counters.dropped, 1);
                        debug!(host = %peer.config.host, error = ?e, "a WireGuard message was refused");
                    }
                    return;
                }
            };
            if sender != peer.config.tunnel_ip {
                bump(&self.counters.dropped, 1);
                debug!(host = %peer.config.host, sender = %sender, "a peer sent a packet from an address not its own");
                return;
            }
            return self.hand_over(packet, into);
        }
    }

    /// An opened packet goes to the run it can join; the other run is written first, so that
    /// packets reach the namespace in the order they came.
    fn hand_over(&self, packet: &[u8], into: &mut Delivery) {
        if let (Some((device, _)), Some(merger)) = (&self.inbound, &mut into.merger) {
            into.coalescer.flush(&self.tun, &mut into.written);
            if merger.push(packet, &mut &*device, &mut into.written) {
                return;
            }
            merger.flush(&mut &*device, &mut into.written);
        }
        into.coalescer.push(packet, &self.tun, &mut into.written);
    }

    /// Writes what is left in the run and counts what reached the device.
    fn deliver(&self, into: &mut Delivery) {
        if let (Some((device, _)), Some(merger)) = (&self.inbound, &mut into.merger) {
            merger.flush(&mut &*device, &mut into.written);
        }
        into.coalescer.flush(&self.tun, &mut into.written);
        let written = std::mem::take(&mut into.written);
        bump(&self.counters.rx_packets, written.packets);
        bump(&self.counters.rx_bytes, written.bytes);
        bump(&self.counters.dropped, written.lost);
    }

    /// Handshake retries, rekeying and keepalives.
    fn timer_loop(&self) {
        let mut out = vec![0u8; OUT_BUFFER];
        while !self.stopping() {
            std::thread::sleep(TICK);
            for peer in self.table().by_tunnel_ip.values() {
                let mut session = peer.session();
                if let TunnResult::WriteToNetwork(message) = session.update_timers(&mut out) {
                    self.send(message, peer.config.endpoint);
                }
            }
        }
    }
}
