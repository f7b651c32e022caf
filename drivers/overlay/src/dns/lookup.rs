//! What to answer, decided from the directory alone.

use std::net::IpAddr;

/// The query types answered from the directory; anything else is forwarded (or refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    A,
    Aaaa,
    /// Any other type: a name of ours answers NOERROR with no records.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The source is no container of this host: REFUSED, nothing forwarded.
    Refused,
    /// Not a name of a network the asker is on: forward to the upstream resolvers.
    NotOurs,
    /// A name of ours: these addresses (empty: NOERROR without records).
    Found(Vec<IpAddr>),
}
