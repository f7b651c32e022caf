//! Which process holds a host port, read from /proc, to name it when a port cannot be published.
//! Looked up only when publishing already failed, so its cost (a walk over every process's open
//! files) is paid only then.

use std::collections::BTreeSet;
use std::fs;

use crate::wire::ports::Protocol;

/// A process holding a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// Its command name (`/proc/<pid>/comm`).
    pub name: String,
}

/// The process with a socket bound to `port` (TCP: listening), in this network namespace; None
/// when there is none, or /proc does not tell (SCTP, another user's process without root).
pub fn process_holding(proto: Protocol, port: u16) -> Option<Holder> {
    let tables: &[&str] = match proto {
        Protocol::Tcp => &["tcp", "tcp6"],
        Protocol::Udp => &["udp", "udp6"],
        Protocol::Sctp => return None,
    };
    let inodes: BTreeSet<u64> = tables
        .iter()
        .filter_map(|table| fs::read_to_string(format!("/proc/net/{table}")).ok())
        .flat_map(|text| sockets_on(&text, port, proto == Protocol::Tcp))
        .collect();
    if inodes.is_empty() {
        return None;
    }
    fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let holds = fs::read_dir(entry.path().join("fd")).ok()?.flatten().any(|fd| {
            let target = fs::read_link(fd.path()).unwrap_or_default();
            let inode = target.to_str().and_then(|t| t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok());
            inode.is_some_and(|inode| inodes.contains(&inode))
        });
        if !holds {
            return None;
        }
        let name = fs::read_to_string(entry.path().join("comm")).ok()?;
        Some(Holder { pid, name: name.trim().to_string() })
    })
}

/// The inodes of the sockets of a /proc/net/{tcp,udp}[6] table bound to `port`.
fn sockets_on(table: &str, port: u16, listening_only: bool) -> Vec<u64> {
    const TCP_LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = u16::from_str_radix(fields.get(1)?.rsplit(':').next()?, 16).ok()?;
            let listening = fields.get(3) == Some(&TCP_LISTEN);
            (local_port == port && (listening || !listening_only)).then(|| fields.get(9)?.parse().ok())?
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lines_are_read() {
        let table =
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
           0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1\n\
           1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4343 1\n\
           2: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1\n";
        assert_eq!(sockets_on(table, 8080, true), [4242]);
        assert_eq!(sockets_on(table, 8080, false), [4242, 4343]);
        assert!(sockets_on(table, 81, false).is_empty());
    }

    #[test]
    fn this_process_is_found_holding_its_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let holder = process_holding(Protocol::Tcp, port).expect("the test's own listener");
        assert_eq!(holder.pid, std::process::id());
        drop(listener);
        assert_eq!(process_holding(Protocol::Tcp, port), None);
    }
}
