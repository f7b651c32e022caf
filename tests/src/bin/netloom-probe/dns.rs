//! DNS over UDP for the scenarios: a stand-in upstream resolver, and the asking side (one query,
//! waiting for a name to come or go, a timed burst).

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hickory_server::proto::op::{Message, Query, ResponseCode};
use hickory_server::proto::rr::rdata::A;
use hickory_server::proto::rr::{Name, RData, Record, RecordType};

use super::{socket_for, target, Res};

/// TTL of the stand-in's answers.
const SERVED_TTL: u32 = 1;
/// Pause between two queries of `dns-wait`.
const WAIT_EVERY: Duration = Duration::from_millis(10);

/// `name` without its trailing dot, lower-cased: how names are compared here.
fn plain(name: &Name) -> String {
    name.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

fn dns_name(name: &str) -> Result<Name, String> {
    Name::from_ascii(name).map_err(|e| format!("{name} is no DNS name: {e}"))
}

/// Answers A queries for the names of `records` (`NAME=IPV4`) and NXDOMAIN for every other name.
pub fn serve(addr: &str, records: &[&str]) -> Res {
    let mut table = Vec::new();
    for record in records {
        let (name, ip) = record.split_once('=').ok_or_else(|| format!("{record} is not NAME=IPV4"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|e| format!("{record}: {e}"))?;
        table.push((plain(&dns_name(name)?), ip));
    }
    let sock = UdpSocket::bind(target(addr)?).map_err(|e| format!("bind {addr}: {e}"))?;
    println!("listening on {addr}");
    let mut buf = [0u8; 4096];
    loop {
        let (n, from) = sock.recv_from(&mut buf).map_err(|e| format!("recv: {e}"))?;
        let Ok(query) = Message::from_vec(&buf[..n]) else {
            println!("{from}: not a DNS message ({n} bytes)");
            continue;
        };
        let reply = answer(&query, &table);
        println!("{from}: {:?} -> {:?}", query.queries.first().map(|q| q.to_string()), reply.metadata.response_code);
        if let Ok(bytes) = reply.to_vec() {
            let _ = sock.send_to(&bytes, from);
        }
    }
}

fn answer(query: &Message, table: &[(String, Ipv4Addr)]) -> Message {
    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.add_queries(query.queries.clone());
    let Some(question) = query.queries.first() else {
        reply.metadata.response_code = ResponseCode::FormErr;
        return reply;
    };
    let asked = plain(question.name());
    let Some(&(_, ip)) = table.iter().find(|(name, _)| *name == asked) else {
        reply.metadata.response_code = ResponseCode::NXDomain;
        return reply;
    };
    if question.query_type() == RecordType::A {
        reply.add_answer(Record::from_rdata(question.name().clone(), SERVED_TTL, RData::A(A(ip))));
    }
    reply
}

/// One reply, summarised: `rcode=<code> answers=<n> <addresses>`; `rcode=none answers=0` when
/// nothing came back.
struct Reply {
    rcode: Option<ResponseCode>,
    addresses: Vec<IpAddr>,
}

impl Reply {
    fn summary(&self) -> String {
        let rcode = self.rcode.map_or("none".to_owned(), |r| format!("{r:?}"));
        let mut line = format!("rcode={rcode} answers={}", self.addresses.len());
        for a in &self.addresses {
            line.push_str(&format!(" {a}"));
        }
        line
    }
}

/// A connected socket to `addr` waiting at most `timeout` per answer.
fn client(addr: &str, timeout: Duration) -> Result<UdpSocket, String> {
    let to = target(addr)?;
    let sock = socket_for(&to)?;
    sock.connect(to).map_err(|e| format!("connect {to}: {e}"))?;
    sock.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    Ok(sock)
}

/// One A query for `name`; the reply with the query's id, or none within the socket's timeout.
fn query_once(sock: &UdpSocket, name: &Name) -> Result<Reply, String> {
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(name.clone(), RecordType::A));
    let bytes = msg.to_vec().map_err(|e| format!("encode: {e}"))?;
    sock.send(&bytes).map_err(|e| format!("send: {e}"))?;
    let mut buf = [0u8; 4096];
    loop {
        let Ok(n) = sock.recv(&mut buf) else {
            return Ok(Reply { rcode: None, addresses: Vec::new() });
        };
        let Ok(reply) = Message::from_vec(&buf[..n]) else { continue };
        if reply.metadata.id != msg.metadata.id {
            continue;
        }
        let addresses = reply.answers.iter().filter_map(|r| r.data.ip_addr()).collect();
        return Ok(Reply { rcode: Some(reply.metadata.response_code), addresses });
    }
}

/// One A query (3 tries, 1 s each): prints its summary. No reply is an outcome, not an error.
pub fn ask(addr: &str, name: &str) -> Res {
    let (sock, name) = (client(addr, Duration::from_secs(1))?, dns_name(name)?);
    let mut reply = query_once(&sock, &name)?;
    for _ in 0..2 {
        if reply.rcode.is_some() {
            break;
        }
        reply = query_once(&sock, &name)?;
    }
    println!("{}", reply.summary());
    Ok(())
}

fn unix_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or_default()
}

/// Asks every 10 ms until `name` has an address (`present`) or has none (`absent`): prints
/// `after_ms=<since start> at_unix_ms=<when> <summary>`; an error after `limit_ms`.
pub fn wait(addr: &str, name: &str, want: &str, limit_ms: &str) -> Res {
    let present = match want {
        "present" => true,
        "absent" => false,
        _ => return Err(format!("{want}: want present or absent")),
    };
    let limit = Duration::from_millis(limit_ms.parse().map_err(|e| format!("limit {limit_ms}: {e}"))?);
    let (sock, name) = (client(addr, Duration::from_millis(500))?, dns_name(name)?);
    let started = Instant::now();
    loop {
        let reply = query_once(&sock, &name)?;
        if reply.rcode.is_some() && reply.addresses.is_empty() != present {
            println!("after_ms={} at_unix_ms={} {}", started.elapsed().as_millis(), unix_ms(), reply.summary());
            return Ok(());
        }
        if started.elapsed() > limit {
            return Err(format!("{name} still not {want} after {limit:?}: {}", reply.summary()));
        }
        std::thread::sleep(WAIT_EVERY);
    }
}

/// `count` A queries one after the other: prints `count=<n> failed=<no address> p50_us=..
/// p99_us=.. max_us=..` over the answered ones.
pub fn burst(addr: &str, name: &str, count: &str) -> Res {
    let count: usize = count.parse().map_err(|e| format!("count {count}: {e}"))?;
    let (sock, name) = (client(addr, Duration::from_secs(1))?, dns_name(name)?);
    let mut took = Vec::with_capacity(count);
    let mut failed = 0;
    for _ in 0..count {
        let t0 = Instant::now();
        let reply = query_once(&sock, &name)?;
        if reply.addresses.is_empty() {
            failed += 1;
        } else {
            took.push(t0.elapsed().as_micros());
        }
    }
    took.sort_unstable();
    let at = |q: f64| took.get(((took.len() as f64 * q).ceil() as usize).saturating_sub(1)).copied().unwrap_or(0);
    println!("count={count} failed={failed} p50_us={} p99_us={} max_us={}", at(0.5), at(0.99), at(1.0));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_its_names_and_nxdomain_otherwise() {
        let table = vec![("outside.example".to_owned(), Ipv4Addr::new(10, 1, 2, 3))];
        let ask = |name: &str, kind| {
            let mut q = Message::query();
            q.add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
            answer(&q, &table)
        };
        let found = ask("Outside.Example.", RecordType::A);
        assert_eq!(found.metadata.response_code, ResponseCode::NoError);
        assert_eq!(found.answers[0].data.ip_addr(), Some(IpAddr::from([10, 1, 2, 3])));
        let other_type = ask("outside.example", RecordType::AAAA);
        assert_eq!((other_type.metadata.response_code, other_type.answers.len()), (ResponseCode::NoError, 0));
        assert_eq!(ask("inside.example", RecordType::A).metadata.response_code, ResponseCode::NXDomain);
    }
}
