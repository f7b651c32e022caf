//! Encrypted loom-overlay networks (`-o encrypted`) against real dockerd, with a capture of the
//! underlay (tcpdump on the bridge joining the hosts):
//! - two Docker 26 hosts, an encrypted network `secret` and a plain one `plain` side by side:
//!   containers talk on both (ICMP, UDP, TCP); a marker sent over `plain` is on the wire, over
//!   `secret` it is not while the WireGuard datagrams are; crafted VXLAN frames with the
//!   encrypted network's VNI (from a member host, from a LAN host, to the VXLAN port and to the
//!   tunnel address) reach no container, after the same injection with the plain VNI did;
//! - key rotation on a host under a continuous ping loses at most a handful of echoes;
//! - a host that removes its last encrypted network leaves the tunnels: no record, device, key or
//!   namespace of it anywhere, and the other host drops it as a peer; then the last host too;
//! - bad input: an MTU that cannot carry both overheads, a host where no WireGuard can start:
//!   a clear refusal with nothing left behind, plain networks unaffected;
//! - Docker 20.10 global scope: an encrypted network carries traffic, the marker off the wire.
//!
//! The capture is shown to work first (a marker in clear between two LAN hosts is found).
//! Needs `cargo build --release --workspace --bins`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use netloom_tests::{
    bin_dir, ping, ping_replies, scenario, wait_until, Capture, Cluster, DockerVersion, Frame, Host, HostConfig,
    InnerUdp, LocalOverlay, NftCounters, UnderlayEtcd, Watch, CRAFTED_SRC_MAC, IMAGE,
};

const PROBE: &str = env!("CARGO_BIN_EXE_netloom-probe");
const NETNS_DIR: &str = "/run/netloom/loom-overlay/netns";
const TUNNEL_NETNS: &str = "ovl-crypt";
const DEVICE: &str = "loomwg0";
const KEY_FILE: &str = "wireguard.key";
const STORE_PREFIX: &str = "/netloom/v1/";
const TUNNELS: &str = "/netloom/v1/overlay/tunnels/";
const TUNNEL_IPS: &str = "/netloom/v1/overlay/tunnel-ips/";
const TUNNEL_SUBNET: &str = "100.64.0.0/10";
const WG_PORT: u16 = 51820;
const VXLAN_PORT: u16 = 4789;
const SECRET_VNI: u32 = 5611;
const PLAIN_VNI: u32 = 5612;
const SECRET_SUBNET: &str = "10.61.0.0/24";
const PLAIN_SUBNET: &str = "10.62.0.0/24";
/// Sent over both networks (UDP both ways, and served over TCP): on the wire only over `plain`.
const MARKER: &str = "netloom-marker-c0ffee-sent-in-clear";
const ECHO_PORT: u16 = 7777;
const INJECT_PORT: u16 = 7778;
const INJECTED: u64 = 200;
/// Underlay 1500 - WireGuard over IPv4 (60) - VXLAN (50).
const SECRET_MTU: u32 = 1390;
const PLAIN_MTU: u32 = 1450;

fn step(t0: Instant, what: &str) {
    eprintln!("[overlay-encrypted] {:6.2}s {what}", t0.elapsed().as_secs_f64());
}

fn vni_option(vni: u32) -> String {
    format!("com.docker.network.driver.overlay.vxlanid_list={vni}")
}

fn create_secret(h: &Host, extra: &[&str]) -> Result<String> {
    let vni = vni_option(SECRET_VNI);
    let mut args = vec!["--ipam-driver", "loom-ipam", "--subnet", SECRET_SUBNET, "-o", "encrypted", "-o", &vni];
    args.extend_from_slice(extra);
    h.network_create("loom-overlay", "secret", &args).with_context(|| format!("creating secret on {}", h.name()))
}

fn create_plain(h: &Host) -> Result<String> {
    let vni = vni_option(PLAIN_VNI);
    h.network_create("loom-overlay", "plain", &["--ipam-driver", "loom-ipam", "--subnet", PLAIN_SUBNET, "-o", &vni])
        .with_context(|| format!("creating plain on {}", h.name()))
}

/// A container that serves the marker over HTTP (`/marker`) and otherwise sleeps.
fn server(h: &Host, name: &str, network: &str) -> Result<String> {
    let script = format!("mkdir -p /www && echo {MARKER} > /www/marker && exec httpd -f -p 80 -h /www");
    h.docker(&["run", "-d", "--name", name, "--network", network, IMAGE, "sh", "-c", &script])
        .with_context(|| format!("starting {name} on {}", h.name()))?;
    h.container_ip(name, network)
}

/// Two Docker 26 hosts with loom-ipam and loom-overlay over an etcd in the underlay.
fn two_hosts(c: &Cluster, overlay_args: &[&str]) -> Result<(UnderlayEtcd, Vec<Arc<Host>>)> {
    let etcd = UnderlayEtcd::start(c, 1)?;
    let store = etcd.url(c);
    let hosts =
        c.add_hosts(vec![HostConfig::new("h1", DockerVersion::V26), HostConfig::new("h2", DockerVersion::V26)])?;
    for h in &hosts {
        LocalOverlay::new(&store).overlay_args(overlay_args).start(h)?;
    }
    Ok((etcd, hosts))
}

fn overlay_plugin(h: &Host) -> Result<Arc<netloom_tests::Plugin>> {
    h.plugins().into_iter().find(|p| p.name() == "loom-overlay").context("no loom-overlay on the host")
}

/// Keeps a UDP echo server (`netloom-probe udp-echo`) running in a container's namespace.
fn echo_server(h: &Host, container: &str) -> Result<netloom_tests::NsProc> {
    let pid = h.container_pid(container)?.to_string();
    let listen = format!("0.0.0.0:{ECHO_PORT}");
    h.spawn(&format!("echo-{container}"), &["nsenter", "-t", &pid, "-n", "--", PROBE, "udp-echo", &listen])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The marker from `from` to `to` on `network` and back: 20 UDP datagrams, a UDP round trip
/// through the echo server, and the marker fetched over TCP from `to`'s httpd.
fn send_marker(h: &Host, from: &str, to: &str) -> Result<()> {
    let target = format!("{to}:{ECHO_PORT}");
    h.exec_in_container_netns(from, &[PROBE, "udp-send", &target, "20", &hex(MARKER.as_bytes())])?;
    let echoed = h.exec_in_container_netns(from, &[PROBE, "udp-ask", &target, MARKER])?;
    ensure!(echoed.trim() == MARKER, "{from} -> {target}: echo {echoed:?}");
    let url = format!("http://{to}/marker");
    let mut got = String::new();
    wait_until(Duration::from_secs(10), Duration::from_millis(200), &format!("{from} to fetch {url}"), || {
        got = h.container_exec(from, &["timeout", "3", "wget", "-q", "-O-", &url]).unwrap_or_default();
        Ok(got.trim() == MARKER)
    })
    .with_context(|| format!("last answer {got:?}"))?;
    Ok(())
}

fn mtu_of(h: &Host, container: &str) -> Result<u32> {
    let out = h.container_exec(container, &["cat", "/sys/class/net/eth0/mtu"])?;
    out.trim().parse().with_context(|| format!("MTU of {container}: {out:?}"))
}

/// The tunnel records in the store by their endpoint's IP, each with its key's host id added as
/// `host_id`.
fn tunnel_records(c: &Cluster) -> Result<BTreeMap<String, serde_json::Value>> {
    let endpoint = UnderlayEtcd::endpoint(c, 0);
    let out = c.underlay_exec(&["etcdctl", "--endpoints", &endpoint, "get", "--prefix", TUNNELS, "-w", "json"])?;
    let json: serde_json::Value = serde_json::from_str(&out).with_context(|| format!("etcdctl: {out}"))?;
    let mut records = BTreeMap::new();
    for kv in json["kvs"].as_array().into_iter().flatten() {
        let value = decode_base64(kv["value"].as_str().unwrap_or_default())?;
        let record: serde_json::Value =
            serde_json::from_slice(&value).with_context(|| format!("{}", String::from_utf8_lossy(&value)))?;
        let endpoint = record["endpoint"].as_str().context("a tunnel record without endpoint")?;
        let ip = endpoint.rsplit_once(':').map_or(endpoint, |(ip, _)| ip).to_owned();
        let key = String::from_utf8(decode_base64(kv["key"].as_str().unwrap_or_default())?)?;
        let host_id = key.strip_prefix(TUNNELS).with_context(|| format!("tunnel record key {key}"))?;
        let mut record = record;
        record["host_id"] = host_id.into();
        records.insert(ip, record);
    }
    Ok(records)
}

fn decode_base64(text: &str) -> Result<Vec<u8>> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for ch in text.bytes().filter(|b| *b != b'=') {
        let v = ALPHABET.iter().position(|a| *a == ch).with_context(|| format!("not base64: {text}"))?;
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

/// A field of `h`'s tunnel record (`public_key`, `tunnel_ip`, `host_id`, ...).
fn tunnel_field(c: &Cluster, h: &Host, field: &str) -> Result<String> {
    let records = tunnel_records(c)?;
    let record =
        records.get(&h.underlay_ip().to_string()).with_context(|| format!("no tunnel record of {}", h.name()))?;
    Ok(record[field].as_str().with_context(|| format!("{}'s tunnel record has no {field}", h.name()))?.to_owned())
}

fn tunnel_ip_of(c: &Cluster, h: &Host) -> Result<Ipv4Addr> {
    let ip = tunnel_field(c, h, "tunnel_ip")?;
    ip.parse().with_context(|| format!("tunnel_ip {ip}"))
}

/// The last `tunnel peers set` line of `h`'s loom-overlay log (the driver logs its peer set on
/// every change).
fn logged_peers(h: &Host) -> Result<String> {
    let log = std::fs::read_to_string(overlay_plugin(h)?.log_path())?;
    Ok(log.lines().rev().find(|l| l.contains("tunnel peers set")).unwrap_or_default().to_owned())
}

/// What of the tunnel is on `h`: its namespace, its device (seen from inside), its key file.
fn tunnel_leftovers(h: &Host) -> Result<Vec<String>> {
    let mut left = Vec::new();
    let netns = format!("{NETNS_DIR}/{TUNNEL_NETNS}");
    if h.path_inside(&netns).exists() {
        left.push(format!("namespace {netns}"));
        if let Ok(links) = h.exec(&["nsenter", &format!("--net={netns}"), "ip", "-o", "link"]) {
            if links.contains(DEVICE) {
                left.push(format!("device {DEVICE}"));
            }
        }
    }
    if h.exec(&["ip", "-o", "link"])?.contains(DEVICE) {
        left.push(format!("device {DEVICE} in the host's namespace"));
    }
    let key = overlay_plugin(h)?.state_dir().join(KEY_FILE);
    if key.exists() {
        left.push(format!("key file {}", key.display()));
    }
    Ok(left)
}

/// Store keys under the overlay prefix naming tunnels.
fn tunnel_keys(etcd: &UnderlayEtcd, c: &Cluster) -> Result<Vec<String>> {
    let mut keys = etcd.keys(c, 0, TUNNELS)?;
    keys.extend(etcd.keys(c, 0, TUNNEL_IPS)?);
    Ok(keys)
}

fn eventually(what: &str, check: impl FnMut() -> Result<bool>) -> Result<()> {
    wait_until(Duration::from_secs(10), Duration::from_millis(100), what, check)
}

// ---- the capture works ------------------------------------------------------------------------

/// Between two LAN hosts, a marker in clear is found and the frames are counted: what the
/// scenarios below count as absent would be seen.
fn capture_scenario(c: &Cluster) -> Result<()> {
    let a = c.add_neighbour("a")?;
    let b = c.add_neighbour("b")?;
    let cap = Capture::on_underlay(c, "capture", "br0")?;
    let mark = cap.mark()?;
    let to = format!("{}:{ECHO_PORT}", b.underlay_ip());
    a.exec(&[PROBE, "udp-send", &to, "10", &hex(MARKER.as_bytes())])?;
    let watch = Watch { marker: MARKER.as_bytes(), port: Some(ECHO_PORT), vni: None };
    let mut seen = cap.since(mark, &watch)?;
    // The first datagram may wait for ARP; all ten arrive.
    eventually("the capture to see the datagrams", || {
        seen = cap.since(mark, &watch)?;
        Ok(seen.port_frames >= 10)
    })?;
    eprintln!("[overlay-encrypted] capture of a marker in clear between LAN hosts: {seen}");
    ensure!(seen.frames >= 10 && seen.marker_hits >= 10, "the capture missed the marker sent in clear: {seen}");
    let after = cap.since(cap.mark()?, &watch)?;
    ensure!(after.marker_hits == 0, "a later phase counts earlier frames: {after}");
    Ok(())
}

// ---- encrypted and plain side by side -------------------------------------------------------------

fn side_by_side(c: &Cluster) -> Result<()> {
    let t0 = Instant::now();
    let cap = Capture::on_underlay(c, "capture", "br0")?;
    let (_etcd, hosts) = two_hosts(c, &[])?;
    let (h1, h2) = (&hosts[0], &hosts[1]);
    let lan = c.add_neighbour("lan")?;
    for h in [h1, h2] {
        create_secret(h, &[])?;
        create_plain(h)?;
    }
    let s1 = server(h1, "s1", "secret")?;
    let s2 = server(h2, "s2", "secret")?;
    let p1 = server(h1, "p1", "plain")?;
    let p2 = server(h2, "p2", "plain")?;
    let _echoes = [echo_server(h1, "s1")?, echo_server(h2, "s2")?, echo_server(h1, "p1")?, echo_server(h2, "p2")?];
    step(t0, &format!("secret: s1 {s1} on h1, s2 {s2} on h2; plain: p1 {p1}, p2 {p2}"));

    ping(h1, "s1", &s2)?;
    ping(h2, "s2", &s1)?;
    ping(h1, "p1", &p2)?;
    ping(h2, "p2", &p1)?;
    ensure!(mtu_of(h1, "s1")? == SECRET_MTU, "s1's MTU is {}, want {SECRET_MTU}", mtu_of(h1, "s1")?);
    ensure!(mtu_of(h2, "p2")? == PLAIN_MTU, "p2's MTU is {}, want {PLAIN_MTU}", mtu_of(h2, "p2")?);
    // Full-size packets cross the tunnel (a wrong MTU would lose them).
    let big = (SECRET_MTU - 28).to_string();
    h1.container_exec("s1", &["ping", "-c", "2", "-W", "2", "-s", &big, &s2]).context("full-size ping on secret")?;
    step(t0, "both networks carry ping both ways; MTU secret 1390, plain 1450; full-size packets cross");

    let chain = format!(
        "chain ingress {{\n type filter hook ingress device \"eth0\" priority -500; policy accept;\n \
         udp dport {ECHO_PORT} counter name to_echo\n }}"
    );
    let at_s2 = NftCounters::in_container(h2, "s2", "netdev", "nlt_replay", &["to_echo"], &chain)?;
    let secret_watch = Watch { marker: MARKER.as_bytes(), port: Some(WG_PORT), vni: Some((VXLAN_PORT, SECRET_VNI)) };
    let secret_start = cap.mark()?;
    send_marker(h1, "s1", &s2)?;
    send_marker(h2, "s2", &s1)?;
    let secret = cap.since(secret_start, &secret_watch)?;
    step(t0, &format!("marker over secret, both ways: {secret}"));
    let plain_watch = Watch { marker: MARKER.as_bytes(), port: Some(WG_PORT), vni: Some((VXLAN_PORT, PLAIN_VNI)) };
    let mark = cap.mark()?;
    let sealed = cap.frames()?[secret_start..mark].to_vec();
    send_marker(h1, "p1", &p2)?;
    send_marker(h2, "p2", &p1)?;
    let plain = cap.since(mark, &plain_watch)?;
    step(t0, &format!("marker over plain, both ways: {plain}"));
    ensure!(plain.marker_hits >= 1 && plain.vni_frames > 0, "the marker over plain is not on the wire: {plain}");
    ensure!(plain.port_frames == 0, "plain traffic went through the tunnel: {plain}");
    ensure!(secret.port_frames > 0, "no WireGuard datagrams while secret carried the marker: {secret}");
    ensure!(secret.marker_hits == 0, "the marker sent over secret is on the wire in clear: {secret}");
    ensure!(secret.vni_frames == 0, "VXLAN frames of the encrypted VNI on the wire: {secret}");

    replay(t0, &sealed, &at_s2, h1, h2, &lan)?;
    inject(c, t0, h1, h2, &lan)?;
    ping(h1, "s1", &s2).context("secret after the attacks")?;
    ping(h1, "p1", &p2).context("plain after the attacks")?;
    h1.plugins_still_running()?;
    h2.plugins_still_running()?;
    Ok(())
}

/// The WireGuard data messages h1 sent h2 while the marker crossed (`sealed`, some carrying
/// datagrams to s2's echo port), sent to h2 again from the LAN host and from h1's own namespace:
/// none may reach s2 (counted at its eth0 by UDP port, where the originals were counted first).
fn replay(t0: Instant, sealed: &[Frame], at_s2: &NftCounters, h1: &Host, h2: &Host, lan: &Host) -> Result<()> {
    let originals = at_s2.get("to_echo")?;
    ensure!(originals >= 21, "only {originals} datagrams to s2's echo port counted while the marker crossed");
    let data: Vec<String> = sealed
        .iter()
        .filter_map(|f| f.outer_udp())
        .filter(|u| u.src == h1.underlay_ip() && u.dst == h2.underlay_ip() && u.dport == WG_PORT)
        .flat_map(|u| wireguard_messages(u.payload))
        // WireGuard's transport data messages (type 4); handshakes and cookies are other types.
        .filter(|m| m.first() == Some(&4))
        .map(hex)
        .take(40)
        .collect();
    ensure!(data.len() >= 21, "only {} WireGuard data messages h1 -> h2 captured", data.len());
    let chain = format!(
        "chain arriving {{\n type filter hook prerouting priority -500; policy accept;\n \
         ip saddr {} udp sport != {WG_PORT} udp dport {WG_PORT} counter name from_h1\n \
         ip saddr {} udp dport {WG_PORT} counter name from_lan\n }}",
        h1.underlay_ip(),
        lan.underlay_ip()
    );
    let at_h2 = NftCounters::in_host(h2, "inet", "nlt_replay", &["from_h1", "from_lan"], &chain)?;
    let to = format!("{}:{WG_PORT}", h2.underlay_ip());
    for from in [lan, h1] {
        for message in &data {
            from.exec(&[PROBE, "udp-send", &to, "1", message])?;
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let (from_lan, from_h1) = (at_h2.get("from_lan")?, at_h2.get("from_h1")?);
    let replayed = at_s2.get("to_echo")? - originals;
    step(
        t0,
        &format!(
            "replay of {} captured WireGuard data messages: {from_lan} from the LAN host and {from_h1} from h1 reached \
             h2, {replayed} datagrams reached s2 (the originals: {originals})",
            data.len()
        ),
    );
    let sent = data.len() as u64;
    ensure!(from_lan >= sent && from_h1 >= sent, "the replay did not run");
    ensure!(replayed == 0, "{replayed} replayed datagrams reached s2");
    Ok(())
}

/// The WireGuard messages in a captured datagram. The engine sends runs of equal-sized messages as
/// one segmented send, which a capture on the veth underlay sees before segmentation: one datagram
/// holding them back to back. Each data message starts with its type and the receiver's index,
/// the same for all messages to one peer, which gives the segment size.
fn wireguard_messages(payload: &[u8]) -> Vec<&[u8]> {
    const HEAD: usize = 8;
    // The shortest message: type, receiver, counter (16 bytes) and the tag (16).
    const SHORTEST: usize = 32;
    if payload.len() < 2 * SHORTEST {
        return vec![payload];
    }
    let segment =
        (SHORTEST..payload.len()).find(|&at| payload[at..].starts_with(&payload[..HEAD])).unwrap_or(payload.len());
    payload.chunks(segment).collect()
}

/// Crafted VXLAN frames to h2 carrying a UDP datagram to a container there, counted on arrival in
/// the container (by their source MAC at its eth0's ingress). With the plain network's VNI from
/// member host h1 they arrive (the frames are good); with the encrypted VNI they reach nothing.
fn inject(c: &Cluster, t0: Instant, h1: &Host, h2: &Host, lan: &Host) -> Result<()> {
    let src_mac = CRAFTED_SRC_MAC.map(|b| format!("{b:02x}")).join(":");
    let chain = format!(
        "chain ingress {{\n type filter hook ingress device \"eth0\" priority -500; policy accept;\n \
         ether saddr {src_mac} counter name crafted\n }}"
    );
    let in_s2 = NftCounters::in_container(h2, "s2", "netdev", "nlt_inject", &["crafted"], &chain)?;
    let in_p2 = NftCounters::in_container(h2, "p2", "netdev", "nlt_inject", &["crafted"], &chain)?;
    let arriving = format!(
        "chain arriving {{\n type filter hook prerouting priority -500; policy accept;\n \
         ip saddr {} udp dport {VXLAN_PORT} counter name from_h1\n \
         ip saddr {} udp dport {VXLAN_PORT} counter name from_lan\n \
         ip saddr {} ip daddr {TUNNEL_SUBNET} counter name to_tunnel\n }}",
        h1.underlay_ip(),
        lan.underlay_ip(),
        lan.underlay_ip()
    );
    let at_h2 = NftCounters::in_host(h2, "inet", "nlt_inject", &["from_h1", "from_lan", "to_tunnel"], &arriving)?;
    let frame = |container: &str, network: &str, vni: u32| -> Result<String> {
        let mac = h2.container_network_field(container, network, "MacAddress")?;
        let dst: Ipv4Addr = h2.container_ip(container, network)?.parse()?;
        let src = Ipv4Addr::new(dst.octets()[0], dst.octets()[1], dst.octets()[2], 250);
        let payload = format!("crafted {MARKER}");
        InnerUdp { vni, dst_mac: &mac, src, dst, dport: INJECT_PORT, payload: payload.as_bytes() }.hex()
    };
    let send = |from: &Host, to: &str, hex: &str| -> Result<()> {
        from.exec(&[PROBE, "udp-send", to, &INJECTED.to_string(), hex]).map(drop)
    };
    let settle = || std::thread::sleep(Duration::from_millis(500));
    let vxlan_port = format!("{}:{VXLAN_PORT}", h2.underlay_ip());

    // The control: from member host h1 with the plain VNI, to p2.
    send(h1, &vxlan_port, &frame("p2", "plain", PLAIN_VNI)?)?;
    eventually("the plain control's frames to reach p2", || Ok(in_p2.get("crafted")? >= INJECTED))?;
    let control = in_p2.get("crafted")?;
    step(t0, &format!("control: {control} of {INJECTED} crafted frames with the plain VNI from h1 reached p2"));

    // From member host h1 (its root passes the VXLAN guard), with the encrypted VNI, to s2.
    let secret_frame = frame("s2", "secret", SECRET_VNI)?;
    let before = at_h2.get("from_h1")?;
    send(h1, &vxlan_port, &secret_frame)?;
    settle();
    let from_h1 = at_h2.get("from_h1")? - before;
    let member_got = in_s2.get("crafted")?;
    step(t0, &format!("member h1, encrypted VNI: {from_h1} datagrams reached h2, {member_got} frames reached s2"));

    // From a LAN host: to the VXLAN port, then to h2's tunnel address through a route via h2.
    send(lan, &vxlan_port, &secret_frame)?;
    settle();
    let from_lan = at_h2.get("from_lan")?;
    let lan_got = in_s2.get("crafted")? - member_got;
    let tunnel_ip = tunnel_ip_of(c, h2)?;
    lan.exec(&["ip", "route", "add", TUNNEL_SUBNET, "via", &h2.underlay_ip().to_string()])?;
    send(lan, &format!("{tunnel_ip}:{VXLAN_PORT}"), &secret_frame)?;
    settle();
    let to_tunnel = at_h2.get("to_tunnel")?;
    let tunnel_got = in_s2.get("crafted")? - member_got - lan_got;
    step(
        t0,
        &format!(
            "LAN host: {from_lan} datagrams to h2's VXLAN port, {to_tunnel} to its tunnel address {tunnel_ip} \
             reached h2; {lan_got} and {tunnel_got} frames reached s2"
        ),
    );
    ensure!(from_h1 >= INJECTED && from_lan >= INJECTED && to_tunnel >= INJECTED, "the attack did not run");
    ensure!(
        member_got == 0 && lan_got == 0 && tunnel_got == 0,
        "crafted frames with the encrypted VNI reached s2: {member_got} from member h1, {lan_got} from a LAN host \
         to the VXLAN port, {tunnel_got} to the tunnel address (of {INJECTED} each)"
    );
    Ok(())
}

// ---- key rotation -------------------------------------------------------------------------------------

const PINGS: u32 = 50;
const MAX_LOST: u32 = 3;

fn rotation(c: &Cluster) -> Result<()> {
    let t0 = Instant::now();
    let (_etcd, hosts) = two_hosts(c, &[])?;
    let (h1, h2) = (&hosts[0], &hosts[1]);
    for h in [h1, h2] {
        create_secret(h, &[])?;
    }
    let s1 = server(h1, "s1", "secret")?;
    let s2 = server(h2, "s2", "secret")?;
    ping(h1, "s1", &s2)?;
    ping(h2, "s2", &s1)?;
    let (key1, key2) = (tunnel_field(c, h1, "public_key")?, tunnel_field(c, h2, "public_key")?);
    let key_file = overlay_plugin(h1)?.state_dir().join(KEY_FILE);
    let file_before = std::fs::read(&key_file).with_context(|| format!("{}", key_file.display()))?;
    step(t0, "secret carries ping; keys in the store");

    let (ping_out, rotated) = std::thread::scope(|s| {
        let pinger = s.spawn(|| {
            let script = format!("ping -c {PINGS} -i 0.2 -W 1 {s2}; true");
            h1.container_exec("s1", &["sh", "-c", &script])
        });
        std::thread::sleep(Duration::from_secs(3));
        let rotate = Instant::now();
        let rotated = rotate_key(h1).map(|key| (key, rotate.elapsed()));
        (pinger.join().unwrap_or_else(|_| bail!("the pinger panicked")), rotated)
    });
    let ping_out = ping_out?;
    let (printed, took) = rotated?;
    let received = ping_replies(&ping_out);
    let lost = PINGS.saturating_sub(received);
    step(
        t0,
        &format!("rotation on h1 took {took:?}; ping s1 -> s2 every 200 ms: {received}/{PINGS} answered, {lost} lost"),
    );
    ensure!(lost <= MAX_LOST, "{lost} of {PINGS} echoes lost across the rotation (at most {MAX_LOST}):\n{ping_out}");

    let (new1, still2) = (tunnel_field(c, h1, "public_key")?, tunnel_field(c, h2, "public_key")?);
    ensure!(new1 != key1, "h1's public key in the store did not change: {key1}");
    ensure!(still2 == key2, "h2's key changed too: {key2} -> {still2}");
    ensure!(printed.trim() == new1, "--rotate-key printed {printed:?}, the store has {new1}");
    let file_after = std::fs::read(&key_file)?;
    ensure!(file_after != file_before, "{} did not change", key_file.display());
    ping(h2, "s2", &s1)?;
    ping(h1, "s1", &s2)?;
    step(t0, &format!("h1's key {key1} -> {new1}; traffic flows both ways"));

    // The private key is readable nowhere but in its file: not in the store, not in what the
    // driver tells loomctl. Each place is first shown to hold the public key (the search works).
    let private = String::from_utf8(file_after)?.trim().to_owned();
    ensure!(!private.is_empty() && private != new1, "the key file holds no private key: {private:?}");
    let endpoint = UnderlayEtcd::endpoint(c, 0);
    let store = c.underlay_exec(&["etcdctl", "--endpoints", &endpoint, "get", "--prefix", STORE_PREFIX])?;
    let loomctl = bin_dir().join("loomctl");
    let status = h1.sh(&format!("{} --docker-host none status --json", loomctl.display()))?;
    for (place, text) in [("the store", &store), ("loomctl status --json", &status)] {
        ensure!(text.contains(&new1), "{place} does not show h1's public key {new1}: the search cannot work");
        let hits = text.matches(private.as_str()).count();
        step(t0, &format!("h1's private key in {place}: {hits} hits (public key found)"));
        ensure!(hits == 0, "h1's private key is readable in {place}");
    }

    // Sessions made before the rotation go on until their next handshake; a restarted h2 has
    // none, so the next packet needs a handshake with h1's new key.
    overlay_plugin(h2)?.restart()?;
    let restarted = Instant::now();
    eventually("s2 to reach s1 after h2's driver restarted", || Ok(ping(h2, "s2", &s1).is_ok()))?;
    step(
        t0,
        &format!(
            "a new handshake with h1's new key: s2 reached s1 {:?} after h2's driver restarted",
            restarted.elapsed()
        ),
    );
    h1.plugins_still_running()?;
    h2.plugins_still_running()?;
    Ok(())
}

/// `loom-overlay --rotate-key` on `h`, asking the driver through its socket: the new public key.
fn rotate_key(h: &Host) -> Result<String> {
    let plugin = overlay_plugin(h)?;
    let binary = plugin.binary().display().to_string();
    let socket = plugin.socket();
    h.exec(&[binary.as_str(), "--rotate-key", "--socket", &socket]).context("loom-overlay --rotate-key")
}

// ---- a host leaves ----------------------------------------------------------------------------

fn leaving(c: &Cluster) -> Result<()> {
    let t0 = Instant::now();
    let (etcd, hosts) = two_hosts(c, &[])?;
    let (h1, h2) = (&hosts[0], &hosts[1]);
    for h in [h1, h2] {
        create_secret(h, &[])?;
        create_plain(h)?;
    }
    let s1 = server(h1, "s1", "secret")?;
    let s2 = server(h2, "s2", "secret")?;
    let p1 = server(h1, "p1", "plain")?;
    server(h2, "p2", "plain")?;
    ping(h1, "s1", &s2)?;
    ping(h2, "s2", &s1)?;
    let records = tunnel_records(c)?;
    ensure!(records.len() == 2, "tunnel records: {records:?}");
    let h2_tunnel = tunnel_ip_of(c, h2)?;
    for h in [h1, h2] {
        let left = tunnel_leftovers(h)?;
        ensure!(left.iter().any(|l| l.starts_with("key file")), "{} has no key file: {left:?}", h.name());
        ensure!(left.iter().any(|l| l.starts_with("device")), "{} has no tunnel device: {left:?}", h.name());
    }
    let h2_id = tunnel_field(c, h2, "host_id")?;
    eventually("h1 to log h2 as a tunnel peer", || Ok(logged_peers(h1)?.contains(&h2_id)))?;
    ensure!(fdb_of(h1)?.contains(&h2_tunnel.to_string()), "h1 has no FDB entry for h2's tunnel address {h2_tunnel}");
    step(t0, &format!("two hosts in the tunnel (h2's tunnel address {h2_tunnel})"));

    h2.docker(&["rm", "-f", "s2"])?;
    h2.docker(&["network", "rm", "secret"])?;
    let left = tunnel_leftovers(h2)?;
    ensure!(left.is_empty(), "h2 removed its last encrypted network but keeps {left:?}");
    let records = tunnel_records(c)?;
    ensure!(
        records.keys().collect::<Vec<_>>() == vec![&h1.underlay_ip().to_string()],
        "tunnel records after h2 left: {records:?}"
    );
    let claims = etcd.keys(c, 0, TUNNEL_IPS)?;
    ensure!(
        !claims.iter().any(|k| k.ends_with(&h2_tunnel.to_string())),
        "h2's tunnel address is still claimed: {claims:?}"
    );
    eventually("h1 to drop h2 as a tunnel peer", || Ok(!logged_peers(h1)?.contains(&h2_id)))?;
    eprintln!("[overlay-encrypted] h1: {}", logged_peers(h1)?);
    ensure!(logged_peers(h1)?.contains("count=0"), "h1's peer set is not empty: {}", logged_peers(h1)?);
    let fdb = fdb_of(h1)?;
    ensure!(!fdb.contains(&h2_tunnel.to_string()), "h1 still forwards to h2's tunnel address {h2_tunnel}: {fdb}");
    step(t0, "h2 left: no record, claim, key, device or namespace of it; h1 dropped it as a peer");

    // plain is untouched, and h2 comes back when it creates an encrypted network again.
    ping(h1, "p1", &h2.container_ip("p2", "plain")?).context("plain after h2 left the tunnel")?;
    create_secret(h2, &[])?;
    let s3 = server(h2, "s3", "secret")?;
    let rejoined = Instant::now();
    eventually("h1 to reach s3 on h2", || Ok(ping(h1, "s1", &s3).is_ok()))?;
    let reached = rejoined.elapsed();
    h2.docker(&["rm", "-f", "s3"])?;
    h2.docker(&["network", "rm", "secret"])?;
    step(t0, &format!("h2 rejoined (s1 on h1 reached s3 on h2 {reached:?} after s3 started) and left again"));

    h1.docker(&["rm", "-f", "s1"])?;
    h1.docker(&["network", "rm", "secret"])?;
    for h in [h1, h2] {
        let left = tunnel_leftovers(h)?;
        ensure!(left.is_empty(), "{} keeps {left:?} after the last encrypted network went", h.name());
    }
    let keys = tunnel_keys(&etcd, c)?;
    ensure!(keys.is_empty(), "store keys of tunnels left: {keys:?}");
    ping(h2, "p2", &p1).context("plain after both left the tunnel")?;
    step(t0, "both left: nothing of the tunnel on either host or in the store; plain still works");
    h1.plugins_still_running()?;
    h2.plugins_still_running()?;
    Ok(())
}

/// The FDB entries of the encrypted network's VXLAN link on `h` (each names a peer host's tunnel
/// address).
fn fdb_of(h: &Host) -> Result<String> {
    let netns = format!("--net={NETNS_DIR}/ovl-{SECRET_VNI}");
    let fdb = h.exec(&["nsenter", &netns, "bridge", "fdb", "show", "dev", "vxlan0"])?;
    Ok(fdb.lines().filter(|l| l.contains(" dst ")).collect::<Vec<_>>().join("\n"))
}

// ---- bad input --------------------------------------------------------------------------------------------

fn bad_input(c: &Cluster) -> Result<()> {
    let t0 = Instant::now();
    let etcd = UnderlayEtcd::start(c, 1)?;
    let store = etcd.url(c);
    let hosts =
        c.add_hosts(vec![HostConfig::new("h1", DockerVersion::V26), HostConfig::new("notun", DockerVersion::V26)])?;
    let (h1, notun) = (&hosts[0], &hosts[1]);
    LocalOverlay::new(&store).start(h1)?;
    LocalOverlay::new(&store).overlay_args(&["--tun-device", "/nonexistent"]).start(notun)?;
    let baseline = etcd.keys(c, 0, STORE_PREFIX)?;

    // MTUs the tunnel cannot carry: one that fits a plain network but not both overheads, one
    // below IPv4's minimum.
    for mtu in [PLAIN_MTU, SECRET_MTU + 1, 60] {
        let option = format!("com.docker.network.driver.mtu={mtu}");
        let err = match create_secret(h1, &["-o", &option]) {
            Ok(id) => bail!("an encrypted network with MTU {mtu} was created: {id}"),
            Err(e) => format!("{e:#}"),
        };
        step(t0, &format!("MTU {mtu} refused: {}", daemon_error(&err)));
        let lower = err.to_lowercase();
        ensure!(lower.contains("mtu") && lower.contains(&mtu.to_string()), "the refusal does not name the MTU: {err}");
        ensure!(
            lower.contains("wireguard") && lower.contains("vxlan"),
            "the refusal does not name both overheads: {err}"
        );
        nothing_left(c, &etcd, &baseline, h1, &format!("the refused MTU {mtu}"))?;
    }
    // The largest MTU that fits is taken.
    let option = format!("com.docker.network.driver.mtu={SECRET_MTU}");
    create_secret(h1, &["-o", &option])?;
    server(h1, "s1", "secret")?;
    ensure!(mtu_of(h1, "s1")? == SECRET_MTU, "s1's MTU is {}", mtu_of(h1, "s1")?);
    // What the checks after a refusal look for is there while the network is.
    let present = left_behind(c, &etcd, &baseline, h1)?;
    eprintln!("[overlay-encrypted] while secret exists on h1: {present:?}");
    for what in ["network secret", "store key", "namespace", "device", "key file"] {
        ensure!(present.iter().any(|l| l.starts_with(what)), "no {what} seen while secret exists: {present:?}");
    }
    h1.docker(&["rm", "-f", "s1"])?;
    h1.docker(&["network", "rm", "secret"])?;
    nothing_left(c, &etcd, &baseline, h1, "removing the encrypted network")?;
    step(t0, &format!("MTU {SECRET_MTU} taken; after removal nothing left"));

    // No WireGuard can start on notun: refused, naming the device, nothing left; plain works.
    let err = match create_secret(notun, &[]) {
        Ok(id) => bail!("notun created an encrypted network without a TUN device: {id}"),
        Err(e) => format!("{e:#}"),
    };
    step(t0, &format!("encrypted on a host without TUN refused: {}", daemon_error(&err)));
    ensure!(err.contains("/nonexistent"), "the refusal does not name the TUN device: {err}");
    nothing_left(c, &etcd, &baseline, notun, "the refusal without TUN")?;
    create_plain(notun)?;
    create_plain(h1)?;
    let p1 = server(h1, "p1", "plain")?;
    server(notun, "p2", "plain")?;
    ping(notun, "p2", &p1).context("plain on the host without TUN")?;
    notun.docker(&["rm", "-f", "p2"])?;
    notun.docker(&["network", "rm", "plain"])?;
    step(t0, "plain works on the host without TUN");
    h1.plugins_still_running()?;
    notun.plugins_still_running()?;
    Ok(())
}

/// What an encrypted network left on `h` and in the store: `secret` in Docker, store keys that
/// were not there before (`baseline`), overlay namespaces, the tunnel's device and key on `h`.
fn left_behind(c: &Cluster, etcd: &UnderlayEtcd, baseline: &[String], h: &Host) -> Result<Vec<String>> {
    let mut left = Vec::new();
    let networks = h.docker(&["network", "ls", "--format", "{{.Name}}"])?;
    if networks.lines().any(|n| n == "secret") {
        left.push("network secret in Docker".to_owned());
    }
    // Allocation bitmaps and the space index may stay once made, and host leases come and go.
    let kept = |k: &&String| k.contains("/bits/") || k.contains("/ipam/spaces/") || k.contains("/hosts/");
    let keys = etcd.keys(c, 0, STORE_PREFIX)?;
    left.extend(keys.iter().filter(|k| !baseline.contains(k) && !kept(k)).map(|k| format!("store key {k}")));
    let namespaces = h.sh(&format!("ls {NETNS_DIR} 2>/dev/null || true"))?;
    left.extend(namespaces.split_whitespace().map(|n| format!("namespace {n}")));
    left.extend(tunnel_leftovers(h)?.into_iter().filter(|l| !l.starts_with("namespace")));
    Ok(left)
}

fn nothing_left(c: &Cluster, etcd: &UnderlayEtcd, baseline: &[String], h: &Host, after: &str) -> Result<()> {
    let left = left_behind(c, etcd, baseline, h)?;
    ensure!(left.is_empty(), "after {after}, {} keeps {left:?}", h.name());
    Ok(())
}

/// The daemon's answer in a failed docker command's error.
fn daemon_error(err: &str) -> &str {
    err.lines().find(|l| l.contains("Error response")).unwrap_or(err)
}

// ---- Docker 20.10, global scope ----------------------------------------------------------------

fn global_scope(c: &Cluster) -> Result<()> {
    let t0 = Instant::now();
    let cap = Capture::on_underlay(c, "capture", "br0")?;
    let etcd = UnderlayEtcd::start(c, 1)?;
    let store = etcd.url(c);
    let args = [format!("--cluster-store={store}"), "--cluster-advertise=eth0:2376".to_string()];
    let hosts = c.add_hosts(vec![
        HostConfig::new("g1", DockerVersion::V20).dockerd_args(&args),
        HostConfig::new("g2", DockerVersion::V20).dockerd_args(&args),
    ])?;
    let (g1, g2) = (&hosts[0], &hosts[1]);
    for h in &hosts {
        h.start_plugin("loom-overlay", &["--scope", "global", "--store", &store, "--advertise-addr", "eth0"])?;
    }
    g1.docker(&["network", "create", "-d", "loom-overlay", "--subnet", SECRET_SUBNET, "-o", "encrypted", "secret"])?;
    let s1 = server(g1, "s1", "secret")?;
    let s2 = server(g2, "s2", "secret")?;
    let _echoes = [echo_server(g1, "s1")?, echo_server(g2, "s2")?];
    ping(g1, "s1", &s2)?;
    ping(g2, "s2", &s1)?;
    ensure!(mtu_of(g2, "s2")? == SECRET_MTU, "s2's MTU is {}", mtu_of(g2, "s2")?);
    step(t0, &format!("global encrypted network: s1 {s1} on g1, s2 {s2} on g2 talk"));

    let watch = Watch { marker: MARKER.as_bytes(), port: Some(WG_PORT), vni: None };
    let mark = cap.mark()?;
    send_marker(g1, "s1", &s2)?;
    send_marker(g2, "s2", &s1)?;
    let seen = cap.since(mark, &watch)?;
    step(t0, &format!("marker over the global encrypted network: {seen}"));
    ensure!(seen.port_frames > 0, "no WireGuard datagrams on the wire: {seen}");
    ensure!(seen.marker_hits == 0, "the marker is on the wire in clear: {seen}");

    g1.docker(&["rm", "-f", "s1"])?;
    g2.docker(&["rm", "-f", "s2"])?;
    g1.docker(&["network", "rm", "secret"])?;
    for h in [g1, g2] {
        eventually(&format!("{} to leave the tunnel", h.name()), || Ok(tunnel_leftovers(h)?.is_empty()))?;
    }
    let keys = tunnel_keys(&etcd, c)?;
    ensure!(keys.is_empty(), "store keys of tunnels left: {keys:?}");
    step(t0, "removed: nothing of the tunnel left");
    g1.plugins_still_running()?;
    g2.plugins_still_running()?;
    Ok(())
}

#[test]
fn wireguard_messages_of_a_segmented_send() {
    let message = |n: u8| [&[4, 0, 0, 0, 9, 9, 9, 9][..], &[n; 40]].concat();
    let run = [message(1), message(2), message(3)[..36].to_vec()].concat();
    let split = wireguard_messages(&run);
    assert_eq!(split.len(), 3);
    assert_eq!(split[1], &message(2)[..]);
    assert_eq!(wireguard_messages(&message(7)), vec![&message(7)[..]]);
}

#[test]
fn capture_sees_marker_in_clear() {
    scenario("enccap", capture_scenario);
}

#[test]
fn encrypted_and_plain_side_by_side_docker26() {
    scenario("encside", side_by_side);
}

#[test]
fn encrypted_key_rotation_keeps_traffic_docker26() {
    scenario("encrot", rotation);
}

#[test]
fn encrypted_host_leaves_tunnels_docker26() {
    scenario("encleave", leaving);
}

#[test]
fn encrypted_bad_input_docker26() {
    scenario("encbad", bad_input);
}

#[test]
fn encrypted_global_scope_docker20() {
    scenario("encglob", global_scope);
}
