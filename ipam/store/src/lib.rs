//! netloom's record storage: a small key-value [`Store`] shared by every host, with three
//! backends, each a cargo feature on by default: `embedded` (a redb file, one host), `etcd` (etcd
//! v3) and `consul` (Consul's HTTP API). [`open`] picks one from a `--store` URL and says so
//! clearly when the backend it needs was left out of the build.
//!
//! Drivers keep their networks and endpoints per host with [`DriverRecords`], over a [`Store`] or,
//! for a driver that has nothing to share across hosts, over [`FileRecords`] (one file per
//! record in its state directory, no dependency beyond the standard library).

mod blocking;
mod credentials;
mod escape;
mod files;
mod kv;
mod observed;
mod open;
mod records;
mod url;

#[cfg(any(feature = "embedded", feature = "etcd", feature = "consul"))]
mod keyspace;
#[cfg(any(feature = "etcd", feature = "consul"))]
mod leases;
#[cfg(any(feature = "embedded", feature = "etcd", feature = "consul"))]
mod watch;

#[cfg(feature = "consul")]
pub mod consul;
#[cfg(feature = "embedded")]
mod embedded;
#[cfg(feature = "etcd")]
mod etcd;
#[cfg(any(feature = "etcd", feature = "consul"))]
mod tls_sniff;

pub use self::credentials::{
    ClientIdentity, CredentialFiles, Credentials, CredentialsError, TlsMaterial, UserPassword,
};
pub use self::escape::percent_encode;
pub use self::files::FileRecords;
pub use self::kv::{
    Condition, KeyValue, Op, Revision, Store, StoreError, StoreOptions, StoreResult, Txn, TxnOutcome, WatchEvent,
    WatchStream, DEFAULT_PREFIX,
};
pub use self::observed::{
    check_all, operation_counts, Observed, OperationCount, OperationCounts, StoreHealth, OPERATIONS,
};
pub use self::open::{open, open_with};
pub use self::records::{DriverRecords, EndpointRecord, NetworkRecord, RecordStore};
pub use self::url::StoreUrl;
