//! IPAM behaviour, run the same way against every backend.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use netloom_ipam::store::Store;
use netloom_ipam::{Ipam, IpamConfig, IpamError, PoolInfo};

pub fn none() -> BTreeMap<String, String> {
    BTreeMap::new()
}

pub fn gateway() -> BTreeMap<String, String> {
    BTreeMap::from([("RequestAddressType".to_string(), "com.docker.network.gateway".to_string())])
}

pub fn owner(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("netloom.owner".to_string(), name.to_string())])
}

pub async fn ipam(store: &Arc<dyn Store>, host: &str) -> Ipam {
    Ipam::new(store.clone(), host, IpamConfig::default()).await.unwrap()
}

async fn pool(ipam: &Ipam, space: &str, subnet: &str, range: &str, v6: bool) -> String {
    ipam.request_pool(space, subnet, range, &none(), v6).await.unwrap().pool_id
}

async fn addr(ipam: &Ipam, pool_id: &str) -> String {
    ipam.request_address(pool_id, "", &none()).await.unwrap().to_string()
}

fn pool_map(pools: Vec<PoolInfo>) -> BTreeMap<String, (BTreeMap<String, u32>, Option<String>)> {
    pools.into_iter().map(|p| (p.pool_id, (p.hosts, p.gateway))).collect()
}

/// Runs `op`, expects an error whose text contains `needle`, and checks nothing changed.
macro_rules! refused {
    ($ipam:expr, $op:expr, $variant:pat, $needle:expr) => {{
        let before = pool_map($ipam.pools().await.unwrap());
        let err = $op.await.expect_err(concat!("expected an error from ", stringify!($op)));
        assert!(matches!(err, $variant), "wrong kind of error: {err:?}");
        assert!(err.to_string().contains($needle), "error {:?} should mention {:?}", err.to_string(), $needle);
        assert_eq!(pool_map($ipam.pools().await.unwrap()), before, "a refused request changed pools");
        assert!($ipam.audit().await.unwrap().is_empty());
        err
    }};
}

pub async fn pools(ipam: &Ipam) {
    assert_eq!(pool(ipam, "LocalDefault", "", "", false).await, "LocalDefault/172.17.0.0/16");
    assert_eq!(pool(ipam, "LocalDefault", "", "", false).await, "LocalDefault/172.18.0.0/16");
    assert_eq!(pool(ipam, "LocalDefault", "172.19.0.0/24", "", false).await, "LocalDefault/172.19.0.0/24");
    assert_eq!(pool(ipam, "LocalDefault", "", "", false).await, "LocalDefault/172.20.0.0/16", "skips the overlap");
    assert_eq!(pool(ipam, "GlobalDefault", "", "", false).await, "GlobalDefault/10.0.0.0/24");
    assert_eq!(pool(ipam, "GlobalDefault", "", "", false).await, "GlobalDefault/10.0.1.0/24");

    let explicit = pool(ipam, "LocalDefault", "10.1.0.0/16", "", false).await;
    assert_eq!(explicit, "LocalDefault/10.1.0.0/16");
    assert_eq!(pool(ipam, "LocalDefault", "10.1.0.0/16", "", false).await, explicit, "same subnet, same pool");
    assert_eq!(pool(ipam, "LocalDefault", "10.1.7.9/16", "", false).await, explicit, "host bits are cleared");
    let ranged = pool(ipam, "LocalDefault", "10.1.0.0/16", "10.1.5.0/24", false).await;
    assert_eq!(ranged, "LocalDefault/10.1.0.0/16/10.1.5.0/24");
    let held = pool_map(ipam.pools().await.unwrap());
    assert_eq!(held["LocalDefault/10.1.0.0/16"].0, BTreeMap::from([(ipam.host_id().to_string(), 4)]));

    refused!(
        ipam,
        ipam.request_pool("LocalDefault", "10.1.5.0/24", "", &none(), false),
        IpamError::InUse(_),
        "overlaps pool 10.1.0.0/16"
    );
    refused!(
        ipam,
        ipam.request_pool("LocalDefault", "10.0.0.0/8", "", &none(), false),
        IpamError::InUse(_),
        "already in use in address space LocalDefault"
    );
    refused!(
        ipam,
        ipam.request_pool("LocalDefault", "10.2.0.0/16", "10.3.0.0/24", &none(), false),
        IpamError::Invalid(_),
        "not inside pool"
    );
    refused!(
        ipam,
        ipam.request_pool("LocalDefault", "", "10.3.0.0/24", &none(), false),
        IpamError::Invalid(_),
        "needs a subnet"
    );
    refused!(
        ipam,
        ipam.request_pool("LocalDefault", "10.2.0.0/16", "", &none(), true),
        IpamError::Invalid(_),
        "IPv4 but an IPv6 pool"
    );
    refused!(
        ipam,
        ipam.request_pool("LocalDefault", "fd00::/64", "", &none(), false),
        IpamError::Invalid(_),
        "IPv6 but an IPv4 pool"
    );
    refused!(ipam, ipam.request_pool("LocalDefault", "10.2.0.0", "", &none(), false), IpamError::Invalid(_), "CIDR");
    refused!(
        ipam,
        ipam.request_pool("LocalDefault", "", "", &none(), true),
        IpamError::Invalid(_),
        "no default IPv6 pools"
    );
    refused!(ipam, ipam.request_pool("Custom", "", "", &none(), false), IpamError::Invalid(_), "pass a subnet");
    refused!(
        ipam,
        ipam.request_pool("bad/space", "10.9.0.0/16", "", &none(), false),
        IpamError::Invalid(_),
        "address space"
    );
    refused!(
        ipam,
        ipam.request_pool("LocalDefault", "10.2.0.0/16", "fd00::/64", &none(), false),
        IpamError::Invalid(_),
        "not inside pool"
    );

    assert_eq!(pool(ipam, "Custom", "10.1.0.0/16", "", false).await, "Custom/10.1.0.0/16", "spaces are separate");
    assert_eq!(pool(ipam, "LocalDefault", "fd00:1::/64", "", true).await, "LocalDefault/fd00:1::/64");

    ipam.release_pool(&explicit).await.unwrap();
    ipam.release_pool(&explicit).await.unwrap();
    ipam.release_pool(&ranged).await.unwrap();
    assert!(pool_map(ipam.pools().await.unwrap()).contains_key(&explicit));
    ipam.release_pool(&explicit).await.unwrap();
    assert!(!pool_map(ipam.pools().await.unwrap()).contains_key(&explicit), "last reference deletes the pool");
    ipam.release_pool(&explicit).await.unwrap();
    refused!(ipam, ipam.release_pool("not-a-pool-id"), IpamError::Invalid(_), "not a pool id");
    assert!(ipam.audit().await.unwrap().is_empty());
}

pub async fn addresses(ipam: &Ipam) {
    let small = pool(ipam, "LocalDefault", "10.1.2.0/29", "", false).await;
    assert_eq!(ipam.request_address(&small, "", &gateway()).await.unwrap().to_string(), "10.1.2.1/29");
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(addr(ipam, &small).await);
    }
    assert_eq!(got, ["10.1.2.2/29", "10.1.2.3/29", "10.1.2.4/29", "10.1.2.5/29", "10.1.2.6/29"]);
    let err = refused!(
        ipam,
        ipam.request_address(&small, "", &none()),
        IpamError::Exhausted(_),
        "pool 10.1.2.0/29 is exhausted"
    );
    assert_eq!(err.to_string(), "pool 10.1.2.0/29 is exhausted");

    ipam.release_address(&small, "10.1.2.3").await.unwrap();
    ipam.release_address(&small, "10.1.2.3").await.unwrap();
    assert_eq!(addr(ipam, &small).await, "10.1.2.3/29", "released addresses are reused");
    refused!(ipam, ipam.request_address(&small, "10.1.2.4", &none()), IpamError::InUse(_), "already in use");
    refused!(ipam, ipam.request_address(&small, "10.1.2.1", &none()), IpamError::InUse(_), "gateway");
    ipam.release_address(&small, "10.1.2.4").await.unwrap();
    assert_eq!(ipam.request_address(&small, "10.1.2.4", &owner("ep1")).await.unwrap().to_string(), "10.1.2.4/29");
    assert_eq!(
        ipam.request_address(&small, "10.1.2.4", &owner("ep1")).await.unwrap().to_string(),
        "10.1.2.4/29",
        "a replayed request"
    );
    refused!(ipam, ipam.request_address(&small, "10.1.2.4", &owner("ep2")), IpamError::InUse(_), "by ep1 on host");

    refused!(
        ipam,
        ipam.request_address(&small, "10.1.3.1", &none()),
        IpamError::Invalid(_),
        "outside pool 10.1.2.0/29"
    );
    refused!(
        ipam,
        ipam.request_address(&small, "fd00::1", &none()),
        IpamError::Invalid(_),
        "IPv6 but pool 10.1.2.0/29 is IPv4"
    );
    refused!(ipam, ipam.request_address(&small, "10.1.2.0", &none()), IpamError::Invalid(_), "network address");
    refused!(ipam, ipam.request_address(&small, "10.1.2.7", &none()), IpamError::Invalid(_), "broadcast address");
    refused!(
        ipam,
        ipam.request_address(&small, "10.1.2.2/29", &none()),
        IpamError::Invalid(_),
        "without a prefix length"
    );
    refused!(
        ipam,
        ipam.request_address("LocalDefault/10.99.0.0/16", "", &none()),
        IpamError::NotFound(_),
        "unknown pool id LocalDefault/10.99.0.0/16"
    );
    refused!(ipam, ipam.request_address("garbage", "", &none()), IpamError::Invalid(_), "not a pool id");
    refused!(ipam, ipam.release_address(&small, "10.1.9.9"), IpamError::Invalid(_), "outside pool");
    refused!(
        ipam,
        ipam.release_address("LocalDefault/10.99.0.0/16", "10.99.0.1"),
        IpamError::NotFound(_),
        "unknown pool id"
    );

    // The gateway survives its own release: other hosts still route through it.
    ipam.release_address(&small, "10.1.2.1").await.unwrap();
    refused!(ipam, ipam.request_address(&small, "10.1.2.1", &none()), IpamError::InUse(_), "gateway");

    // A chosen gateway; later gateway requests get it, a different one is refused.
    let chosen = pool(ipam, "LocalDefault", "10.1.3.0/24", "", false).await;
    let gw = ipam.request_address(&chosen, "10.1.3.254", &gateway()).await.unwrap();
    assert_eq!(gw.to_string(), "10.1.3.254/24");
    assert_eq!(ipam.request_address(&chosen, "", &gateway()).await.unwrap(), gw);
    refused!(
        ipam,
        ipam.request_address(&chosen, "10.1.3.1", &gateway()),
        IpamError::InUse(_),
        "already has gateway 10.1.3.254"
    );
    assert_eq!(addr(ipam, &chosen).await, "10.1.3.1/24");

    // A sub-range bounds dynamic addresses only.
    let ranged = pool(ipam, "LocalDefault", "10.4.0.0/16", "10.4.5.0/30", false).await;
    let in_range: Vec<String> = futures::future::join_all((0..4).map(|_| addr(ipam, &ranged))).await;
    let in_range: BTreeSet<String> = in_range.into_iter().collect();
    assert_eq!(in_range, ["10.4.5.0/16", "10.4.5.1/16", "10.4.5.2/16", "10.4.5.3/16"].map(String::from).into());
    refused!(
        ipam,
        ipam.request_address(&ranged, "", &none()),
        IpamError::Exhausted(_),
        "IP range 10.4.5.0/30 of pool 10.4.0.0/16 is exhausted"
    );
    assert_eq!(ipam.request_address(&ranged, "10.4.9.9", &none()).await.unwrap().to_string(), "10.4.9.9/16");

    // IPv6 and the tiny IPv4 pools.
    let v6 = pool(ipam, "LocalDefault", "fd00:2::/125", "", true).await;
    assert_eq!(ipam.request_address(&v6, "", &gateway()).await.unwrap().to_string(), "fd00:2::1/125");
    let mut v6_got = Vec::new();
    for _ in 0..6 {
        v6_got.push(addr(ipam, &v6).await);
    }
    assert_eq!(v6_got.first().unwrap(), "fd00:2::2/125");
    assert_eq!(v6_got.last().unwrap(), "fd00:2::7/125");
    refused!(ipam, ipam.request_address(&v6, "", &none()), IpamError::Exhausted(_), "pool fd00:2::/125 is exhausted");
    refused!(ipam, ipam.request_address(&v6, "fd00:2::", &none()), IpamError::Invalid(_), "subnet-router anycast");
    let p31 = pool(ipam, "LocalDefault", "10.5.0.0/31", "", false).await;
    assert_eq!(addr(ipam, &p31).await, "10.5.0.0/31");
    assert_eq!(addr(ipam, &p31).await, "10.5.0.1/31");
    let p32 = pool(ipam, "LocalDefault", "10.5.0.9/32", "", false).await;
    assert_eq!(addr(ipam, &p32).await, "10.5.0.9/32");

    // Owners are recorded; releasing the pool drops its addresses.
    let listed = ipam.addresses(&small).await.unwrap();
    assert_eq!(listed.len(), 6);
    assert!(listed
        .iter()
        .any(|a| a.ip.to_string() == "10.1.2.4" && a.owner.owner == "ep1" && a.owner.host == ipam.host_id()));
    ipam.release_pool(&small).await.unwrap();
    let again = pool(ipam, "LocalDefault", "10.1.2.0/29", "", false).await;
    assert!(ipam.addresses(&again).await.unwrap().is_empty());
    assert_eq!(ipam.request_address(&again, "", &gateway()).await.unwrap().to_string(), "10.1.2.1/29");
    assert!(ipam.audit().await.unwrap().is_empty());
}

/// Two hosts (`a`, `b`) sharing one store.
pub async fn multi_host(a: &Ipam, b: &Ipam) {
    let id_a = pool(a, "GlobalDefault", "10.20.0.0/24", "", false).await;
    let id_b = pool(b, "GlobalDefault", "10.20.0.0/24", "", false).await;
    assert_eq!(id_a, id_b, "one subnet, one cluster-wide pool");
    let gw_a = a.request_address(&id_a, "", &gateway()).await.unwrap();
    let gw_b = b.request_address(&id_b, "", &gateway()).await.unwrap();
    assert_eq!((gw_a.to_string(), gw_b.to_string()), ("10.20.0.1/24".into(), "10.20.0.1/24".into()));
    refused!(
        b,
        b.request_address(&id_b, "10.20.0.9", &gateway()),
        IpamError::InUse(_),
        "already has gateway 10.20.0.1"
    );
    let x = addr(a, &id_a).await;
    let y = addr(b, &id_b).await;
    assert_ne!(x, y);
    assert_ne!(x, gw_a.to_string());

    // Default pools are never shared.
    let da = pool(a, "GlobalDefault", "", "", false).await;
    let db = pool(b, "GlobalDefault", "", "", false).await;
    assert_ne!(da, db);

    // Per-host ranges on a shared subnet.
    let ra = pool(a, "GlobalDefault", "10.20.0.0/24", "10.20.0.128/26", false).await;
    let rb = pool(b, "GlobalDefault", "10.20.0.0/24", "10.20.0.192/26", false).await;
    assert!(addr(a, &ra).await.starts_with("10.20.0.128"));
    assert!(addr(b, &rb).await.starts_with("10.20.0.192"));

    a.release_pool(&ra).await.unwrap();
    a.release_pool(&id_a).await.unwrap();
    a.release_pool(&id_a).await.unwrap(); // a holds nothing more: no effect on b
    let held = pool_map(b.pools().await.unwrap());
    assert_eq!(held["GlobalDefault/10.20.0.0/24"].0, BTreeMap::from([(b.host_id().to_string(), 2)]));
    assert_eq!(b.request_address(&id_b, "", &gateway()).await.unwrap(), gw_b, "the gateway outlives a's release");
    assert!(addr(b, &id_b).await.starts_with("10.20.0."));
    b.release_pool(&rb).await.unwrap();
    b.release_pool(&id_b).await.unwrap();
    refused!(a, a.request_address(&id_a, "", &none()), IpamError::NotFound(_), "unknown pool id");
    assert!(a.audit().await.unwrap().is_empty());
}

pub async fn vnis(store: &Arc<dyn Store>) {
    let ipam = ipam(store, "vni-host").await;
    assert_eq!(ipam.allocate_vni("net-a").await.unwrap(), 4096);
    assert_eq!(ipam.allocate_vni("net-a").await.unwrap(), 4096, "same owner, same VNI");
    assert_eq!(ipam.allocate_vni("net-b").await.unwrap(), 4097);
    ipam.reserve_vni(5000, "net-c").await.unwrap();
    ipam.reserve_vni(5000, "net-c").await.unwrap();
    ipam.reserve_vni(4097, "net-b").await.unwrap();
    ipam.reserve_vni(100, "low").await.unwrap();
    let err = ipam.reserve_vni(5000, "net-d").await.unwrap_err();
    assert!(matches!(err, IpamError::InUse(_)) && err.to_string().contains("net-c"), "{err}");
    let err = ipam.reserve_vni(6000, "net-b").await.unwrap_err();
    assert!(err.to_string().contains("already has VNI 4097"), "{err}");
    for bad in [0, 1 << 24] {
        assert!(matches!(ipam.reserve_vni(bad, "x").await.unwrap_err(), IpamError::Invalid(_)));
    }
    assert!(matches!(ipam.allocate_vni("").await.unwrap_err(), IpamError::Invalid(_)));

    ipam.release_vni(4096).await.unwrap();
    ipam.release_vni(4096).await.unwrap();
    assert_eq!(ipam.vni_of("net-a").await.unwrap(), None);
    assert_eq!(ipam.allocate_vni("net-e").await.unwrap(), 4098);
    let owners: Vec<(u32, String)> = ipam.vnis().await.unwrap().into_iter().map(|v| (v.vni, v.owner.owner)).collect();
    assert_eq!(
        owners,
        [(100, "low"), (4097, "net-b"), (4098, "net-e"), (5000, "net-c")].map(|(v, o)| (v, o.to_string()))
    );

    // Two hosts reserving one VNI for one network at about the same moment both get it; the
    // second one's start is staggered so that some rounds land between the first one's reads
    // and its commit.
    let (a, b) = (ipam, self::ipam(store, "vni-other").await);
    for i in 0..40u32 {
        let (vni, owner) = (8000 + i, format!("raced-{i}"));
        let late = async {
            tokio::time::sleep(std::time::Duration::from_micros(50 * u64::from(i))).await;
            b.reserve_vni(vni, &owner).await
        };
        let (ra, rb) = tokio::join!(a.reserve_vni(vni, &owner), late);
        assert!(ra.is_ok() && rb.is_ok(), "reserving VNI {vni} for one owner from two hosts: {ra:?} / {rb:?}");
        assert_eq!(a.vni_of(&owner).await.unwrap(), Some(vni));
    }
    let ipam = a;

    let narrow = IpamConfig { vni_first: 7000, vni_last: 7001, ..IpamConfig::default() };
    let narrow = Ipam::new(store.clone(), "vni-narrow", narrow).await.unwrap();
    assert_eq!(narrow.allocate_vni("n1").await.unwrap(), 7000);
    assert_eq!(narrow.allocate_vni("n2").await.unwrap(), 7001);
    let err = narrow.allocate_vni("n3").await.unwrap_err();
    assert_eq!(err.to_string(), "no free VNI left in 7000-7001");
    narrow.release_vni(7000).await.unwrap();
    assert_eq!(narrow.allocate_vni("n3").await.unwrap(), 7000, "wraps around to freed VNIs");
    assert!(ipam.audit().await.unwrap().is_empty());
}

/// Allocates `n` addresses one after another from a /16; returns them.
pub async fn many(ipam: &Ipam, subnet: &str, n: usize) -> Vec<String> {
    let id = pool(ipam, "LocalDefault", subnet, "", false).await;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(addr(ipam, &id).await);
    }
    out
}
