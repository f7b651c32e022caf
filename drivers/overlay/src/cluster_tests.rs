//! A network record is joined only when it is this host's network, a VNI that cannot be had again
//! is an error, and a membership change whose outcome the store did not tell is read back.

use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use netloom_ipam::IpamConfig;
use netloom_store::{self as store, KeyValue, Op, StoreResult, WatchStream, DEFAULT_PREFIX};

use super::*;

/// Applies the next `lost` transactions on network records, then answers with a timeout.
struct LostAnswers {
    inner: Arc<dyn Store>,
    lost: AtomicU32,
    sent: AtomicU32,
}

#[async_trait]
impl Store for LostAnswers {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> StoreResult<Vec<KeyValue>> {
        self.inner.list(prefix).await
    }
    async fn put(&self, key: &str, value: Vec<u8>) -> StoreResult<Revision> {
        self.inner.put(key, value).await
    }
    async fn delete(&self, key: &str) -> StoreResult<bool> {
        self.inner.delete(key).await
    }
    async fn txn(&self, txn: Txn) -> StoreResult<TxnOutcome> {
        let on_network =
            txn.ops.iter().any(|op| matches!(op, Op::Put(k, _) | Op::Delete(k) if k.starts_with("overlay/networks/")));
        if !on_network {
            return self.inner.txn(txn).await;
        }
        self.sent.fetch_add(1, Ordering::SeqCst);
        let outcome = self.inner.txn(txn).await?;
        if self.lost.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            return Err(StoreError::Unavailable {
                backend: "test",
                endpoints: "lost".into(),
                detail: "timed out".into(),
            });
        }
        Ok(outcome)
    }
    async fn watch(&self, prefix: &str) -> StoreResult<WatchStream> {
        self.inner.watch(prefix).await
    }
    async fn put_leased(&self, key: &str, value: Vec<u8>) -> StoreResult<()> {
        self.inner.put_leased(key, value).await
    }
}

fn request(host: &str, docker_id: &str, subnet: &str, vni: Option<u32>) -> NetworkRequest {
    NetworkRequest {
        docker_id: docker_id.into(),
        host: host.into(),
        vni,
        subnet_v4: Some(subnet.parse().unwrap()),
        subnet_v6: None,
        mtu: 1450,
        mtu_given: false,
        internal: false,
        encrypted: false,
    }
}

async fn shared(store: &Arc<dyn Store>, host: &str) -> Shared {
    Shared { store: store.clone(), ipam: Ipam::new(store.clone(), host, IpamConfig::default()).await.unwrap() }
}

fn members(config: &NetworkConfig) -> Vec<(&str, &str)> {
    config.members.iter().map(|(h, d)| (h.as_str(), d.as_str())).collect()
}

#[tokio::test]
async fn a_restored_record_is_joined_only_if_it_is_the_same_network() {
    let dir = tempfile::tempdir().unwrap();
    let store = store::open(None, dir.path(), DEFAULT_PREFIX).await.unwrap();
    let (h1, h2) = (shared(&store, "h1").await, shared(&store, "h2").await);
    let (mine, _, _) = h1.join_local(&request("h1", "d1", "10.9.0.0/24", Some(5000))).await.unwrap();

    // It works: h1 comes back to find itself dropped from its own network, and is written back.
    h2.join_local(&request("h2", "d2", "10.9.0.0/24", Some(5000))).await.unwrap();
    h1.leave_local("vni-5000", "h1").await.unwrap();
    h1.restore_local(&mine, "h1", "d1").await.unwrap();
    let (now, _) = h1.network("vni-5000").await.unwrap().unwrap();
    assert_eq!(members(&now), vec![("h1", "d1"), ("h2", "d2")]);

    // While h1 was away its network went and another took VNI 5000 with another subnet.
    h1.leave_local("vni-5000", "h1").await.unwrap();
    h2.leave_local("vni-5000", "h2").await.unwrap();
    assert!(h1.network("vni-5000").await.unwrap().is_none());
    h2.join_local(&request("h2", "d9", "10.77.0.0/24", Some(5000))).await.unwrap();
    let err = h1.restore_local(&mine, "h1", "d1").await.unwrap_err().to_string();
    assert!(err.contains("another network now (VNI 5000, subnet 10.77.0.0/24)"), "{err}");
    let (now, _) = h1.network("vni-5000").await.unwrap().unwrap();
    assert_eq!(members(&now), vec![("h2", "d9")], "not merged into the other network");

    // Same subnet, other VNI: the subnet index and the VNI table both say no.
    h2.leave_local("vni-5000", "h2").await.unwrap();
    h2.join_local(&request("h2", "d8", "10.9.0.0/24", Some(5001))).await.unwrap();
    let err = h1.restore_local(&mine, "h1", "d1").await.unwrap_err().to_string();
    assert!(err.contains("another overlay has its subnet"), "{err}");
    assert!(h1.network("vni-5000").await.unwrap().is_none());
    assert_eq!(h1.ipam.vni_of(&vni_owner("vni-5000")).await.unwrap(), None, "the VNI taken back is let go");
}

#[tokio::test]
async fn a_vni_that_cannot_be_had_again_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = store::open(None, dir.path(), DEFAULT_PREFIX).await.unwrap();
    let (h1, h2) = (shared(&store, "h1").await, shared(&store, "h2").await);
    let (mine, _, _) = h1.join_local(&request("h1", "d1", "10.9.0.0/24", Some(5000))).await.unwrap();
    h1.leave_local("vni-5000", "h1").await.unwrap();
    // The record is gone and VNI 5000 went to something else.
    h2.ipam.reserve_vni(5000, "someone-else").await.unwrap();
    let err = h1.restore_local(&mine, "h1", "d1").await.unwrap_err().to_string();
    assert!(err.contains("its VNI 5000") && err.contains("already in use"), "{err}");
    assert!(h1.network("vni-5000").await.unwrap().is_none(), "not written back without its VNI");
}

#[tokio::test]
async fn a_membership_change_whose_answer_was_lost_is_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let inner = store::open(None, dir.path(), DEFAULT_PREFIX).await.unwrap();
    let lossy = Arc::new(LostAnswers { inner, lost: AtomicU32::new(0), sent: AtomicU32::new(0) });
    let store: Arc<dyn Store> = lossy.clone();
    let (h1, h2) = (shared(&store, "h1").await, shared(&store, "h2").await);

    lossy.lost.store(1, Ordering::SeqCst);
    let (created, outcome, _) = h1.join_local(&request("h1", "d1", "10.9.0.0/24", None)).await.unwrap();
    assert_eq!((outcome, lossy.sent.load(Ordering::SeqCst)), (Outcome::Created, 1));
    lossy.lost.store(1, Ordering::SeqCst);
    let (joined, outcome, _) = h2.join_local(&request("h2", "d2", "10.9.0.0/24", None)).await.unwrap();
    assert_eq!((outcome, lossy.sent.load(Ordering::SeqCst)), (Outcome::Joined, 2));
    assert_eq!(joined.vni, created.vni);

    // Leaving with the answer lost: no phantom membership keeps the network and its VNI.
    for host in ["h2", "h1"] {
        lossy.lost.store(1, Ordering::SeqCst);
        h1.leave_local(&created.key, host).await.unwrap();
    }
    assert!(h1.network(&created.key).await.unwrap().is_none());
    assert_eq!(h1.ipam.vnis().await.unwrap(), vec![], "the VNI is free again");
}

#[tokio::test]
async fn an_encrypted_network_is_joined_only_encrypted() {
    let dir = tempfile::tempdir().unwrap();
    let store = store::open(None, dir.path(), DEFAULT_PREFIX).await.unwrap();
    let (h1, h2) = (shared(&store, "h1").await, shared(&store, "h2").await);
    let secret = |host: &str, docker_id: &str, subnet: &str, vni| NetworkRequest {
        encrypted: true,
        ..request(host, docker_id, subnet, vni)
    };
    let (created, _, _) = h1.join_local(&secret("h1", "d1", "10.9.0.0/24", Some(5000))).await.unwrap();
    assert!(created.encrypted);

    // It works: h2 joins it encrypted, by VNI and by subnet alike.
    let (joined, outcome, _) = h2.join_local(&secret("h2", "d2", "10.9.0.0/24", None)).await.unwrap();
    assert_eq!((outcome, joined.encrypted, joined.vni), (Outcome::Joined, true, 5000));
    h2.leave_local("vni-5000", "h2").await.unwrap();

    // Plain where the record is encrypted: refused, naming both; the record is unchanged.
    for vni in [Some(5000), None] {
        let err = h2.join_local(&request("h2", "d3", "10.9.0.0/24", vni)).await.unwrap_err().to_string();
        assert!(err.contains("is encrypted on the other hosts, but this request is plain (not encrypted)"), "{err}");
    }
    let (now, _) = h1.network("vni-5000").await.unwrap().unwrap();
    assert_eq!(members(&now), vec![("h1", "d1")]);

    // And the other way round.
    h2.join_local(&request("h2", "d4", "10.8.0.0/24", Some(5001))).await.unwrap();
    let err = h1.join_local(&secret("h1", "d5", "10.8.0.0/24", Some(5001))).await.unwrap_err().to_string();
    assert!(err.contains("is plain (not encrypted) on the other hosts, but this request is encrypted"), "{err}");

    // A restored record that changed its encryption is another network.
    let mut plain_now = created.clone();
    plain_now.encrypted = false;
    let err = h1.restore_local(&plain_now, "h1", "d1").await.unwrap_err().to_string();
    assert!(err.contains("subnet 10.9.0.0/24, encrypted), not this host's (VNI 5000, subnet 10.9.0.0/24)"), "{err}");
}
