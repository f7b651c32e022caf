//! Container names across hosts (Docker 23+, local scope): loom-overlay answers DNS.
//!
//! Docker's embedded resolver (127.0.0.11) answers the names of its own host's containers and
//! forwards every other name to dockerd's `--dns` servers, from the container's namespace. With
//! loom-overlay's address among them, a container's lookup of a container on another host
//! arrives here, from the container's docker_gwbridge (or overlay) address.
//!
//! - [`Directory`]: the in-memory index the answers come from, kept by the store watch (names
//!   and addresses of every endpoint on every host) and by this host's view of Docker (which
//!   source address is which local container, on which networks). No store read per query.
//! - `lookup`: what to answer, as a pure function of the directory.
//! - `server`: UDP and TCP on `--dns-addr`, answers from the directory, everything else
//!   forwarded to the host's upstream resolvers (its resolv.conf), SERVFAIL at once without one.

mod directory;
mod forward;
mod lookup;
mod server;
mod upstream;

pub use directory::{Asker, Directory, NamedEndpoint};
// The outcome of a lookup is part of the interface even where only this module reads it.
#[allow(unused_imports)]
pub use lookup::{Lookup, QueryKind};
pub use server::{DnsConfig, DnsServer};
