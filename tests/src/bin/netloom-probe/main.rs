//! A tiny UDP tool for the scenarios, run inside a host's, a neighbour's or a container's network
//! namespace (busybox's nc has no UDP):
//!
//! ```text
//! netloom-probe udp-send ADDR:PORT COUNT HEX   send COUNT datagrams holding the bytes HEX
//! netloom-probe udp-echo ADDR:PORT             answer every datagram with its own bytes
//! netloom-probe udp-ask  ADDR:PORT TEXT        send TEXT, print the answer (3 tries, 1 s each)
//! netloom-probe dns-serve ADDR:PORT NAME=IPV4...       answer A for NAME, NXDOMAIN for other names
//! netloom-probe dns-ask   ADDR:PORT NAME               one A query: `rcode=.. answers=N ADDR..`
//! netloom-probe dns-wait  ADDR:PORT NAME present|absent MS   ask until NAME has (lacks) an address
//! netloom-probe dns-burst ADDR:PORT NAME COUNT         COUNT queries in a row: latency p50/p99
//! ```
//!
//! It needs no privilege: an ordinary UDP socket is all an attacker has, too.

use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::Duration;

mod dns;

const USAGE: &str = "usage: netloom-probe udp-send ADDR:PORT COUNT HEX | udp-echo ADDR:PORT | udp-ask ADDR:PORT TEXT \
                     | dns-serve ADDR:PORT NAME=IPV4... | dns-ask ADDR:PORT NAME \
                     | dns-wait ADDR:PORT NAME present|absent MS | dns-burst ADDR:PORT NAME COUNT";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let res = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["udp-send", addr, count, hex] => send(addr, count, hex),
        ["udp-echo", addr] => echo(addr),
        ["udp-ask", addr, text] => ask(addr, text),
        ["dns-serve", addr, ref records @ ..] if !records.is_empty() => dns::serve(addr, records),
        ["dns-ask", addr, name] => dns::ask(addr, name),
        ["dns-wait", addr, name, want, limit_ms] => dns::wait(addr, name, want, limit_ms),
        ["dns-burst", addr, name, count] => dns::burst(addr, name, count),
        _ => Err(USAGE.into()),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netloom-probe: {e}");
            ExitCode::FAILURE
        }
    }
}

type Res = Result<(), String>;

fn target(addr: &str) -> Result<SocketAddr, String> {
    addr.parse().map_err(|e| format!("{addr} is not ADDR:PORT ([v6]:PORT for IPv6): {e}"))
}

/// An unbound socket of the target's family.
fn socket_for(to: &SocketAddr) -> Result<UdpSocket, String> {
    let any = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    UdpSocket::bind(any).map_err(|e| format!("bind {any}: {e}"))
}

fn send(addr: &str, count: &str, hex: &str) -> Res {
    let to = target(addr)?;
    let count: u32 = count.parse().map_err(|e| format!("count {count}: {e}"))?;
    let bytes = decode_hex(hex)?;
    let sock = socket_for(&to)?;
    let mut sent = 0;
    for _ in 0..count {
        sock.send_to(&bytes, to).map_err(|e| format!("send to {to}: {e}"))?;
        sent += 1;
        // Spread them a little, so no queue on the way drops a burst.
        if sent % 50 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    println!("sent {sent}");
    Ok(())
}

fn echo(addr: &str) -> Res {
    let sock = UdpSocket::bind(target(addr)?).map_err(|e| format!("bind {addr}: {e}"))?;
    println!("listening on {addr}");
    let mut buf = [0u8; 2048];
    loop {
        let (n, from) = sock.recv_from(&mut buf).map_err(|e| format!("recv: {e}"))?;
        sock.send_to(&buf[..n], from).map_err(|e| format!("answer {from}: {e}"))?;
    }
}

fn ask(addr: &str, text: &str) -> Res {
    let to = target(addr)?;
    let sock = socket_for(&to)?;
    sock.connect(to).map_err(|e| format!("connect {to}: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_secs(1))).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 2048];
    for _ in 0..3 {
        sock.send(text.as_bytes()).map_err(|e| format!("send to {to}: {e}"))?;
        if let Ok(n) = sock.recv(&mut buf) {
            println!("{}", String::from_utf8_lossy(&buf[..n]));
            return Ok(());
        }
    }
    Err(format!("no answer from {to}"))
}

fn decode_hex(hex: &str) -> Result<Vec<u8>, String> {
    if hex.len() & 1 == 1 {
        return Err(format!("odd-length hex ({} digits)", hex.len()));
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|e| format!("hex at {i}: {e}")))
        .collect()
}
