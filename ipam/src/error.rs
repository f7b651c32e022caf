use netloom_store::StoreError;

/// Every message names the object and says what to do where that isn't obvious; none of these
/// errors leaves anything changed in the store.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum IpamError {
    /// The request itself is wrong (syntax, family mismatch, out of range).
    #[error("{0}")]
    Invalid(String),
    /// An unknown pool id, or an object that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Taken by someone else: an address, a VNI, an overlapping subnet.
    #[error("{0}")]
    InUse(String),
    #[error("{0}")]
    Exhausted(String),
    /// A release by a host (or endpoint) that does not hold what it releases.
    #[error("{0}")]
    NotHolder(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("store key {key} holds data this version of netloom can't read: {detail}")]
    Corrupt { key: String, detail: String },
    /// Too many concurrent writers kept changing the same keys.
    #[error("{0}")]
    Contention(String),
}

pub type IpamResult<T> = Result<T, IpamError>;
