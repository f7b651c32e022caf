//! The loom-ipam binary on a real socket, spoken to the way dockerd does.

mod common;

use std::path::Path;
use std::time::Duration;

use common::etcd::Etcd;
use common::served::Served;
use netloom_plugin_api::client::PluginClient;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_loom-ipam");

/// loom-ipam as host `host`, on its own socket and state directory in `dir`.
fn start(dir: &Path, host: &str, store: Option<&str>) -> Served {
    let socket = dir.join(format!("{host}.sock"));
    let mut args = vec!["--host-id", host];
    if let Some(url) = store {
        args.extend(["--store", url]);
    }
    Served::start(BIN, &socket, &dir.join(format!("state-{host}")), &args)
}

async fn call(client: &mut PluginClient, method: &str, body: Value) -> Value {
    let body = if body.is_null() { String::new() } else { format!("{body}\n") };
    let reply = client.call_raw(method, body).await.unwrap();
    assert_eq!(reply.status, 200, "{method}: {:?}", reply.body);
    reply.body
}

fn gateway_opts() -> Value {
    json!({"RequestAddressType": "com.docker.network.gateway"})
}

#[tokio::test]
async fn docker_sequence_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let pool_id = {
        let driver = start(dir.path(), "h1", None);
        let mut c = driver.client().await;
        assert_eq!(call(&mut c, "Plugin.Activate", Value::Null).await, json!({"Implements": ["IpamDriver"]}));
        let caps = call(&mut c, "IpamDriver.GetCapabilities", Value::Null).await;
        assert_eq!(caps, json!({"RequiresMACAddress": false, "RequiresRequestReplay": false}));
        let spaces = call(&mut c, "IpamDriver.GetDefaultAddressSpaces", Value::Null).await;
        assert_eq!(
            spaces,
            json!({"LocalDefaultAddressSpace": "LocalDefault", "GlobalDefaultAddressSpace": "GlobalDefault"})
        );

        let pool = call(
            &mut c,
            "IpamDriver.RequestPool",
            json!({"AddressSpace": "LocalDefault", "Pool": "", "SubPool": "", "Options": null, "V6": false}),
        )
        .await;
        assert_eq!(pool["PoolID"], "LocalDefault/172.17.0.0/16");
        assert_eq!(pool["Pool"], "172.17.0.0/16");
        let pool_id = pool["PoolID"].as_str().unwrap().to_string();
        let gw = call(
            &mut c,
            "IpamDriver.RequestAddress",
            json!({"PoolID": pool_id, "Address": "", "Options": gateway_opts()}),
        )
        .await;
        assert_eq!(gw["Address"], "172.17.0.1/16");
        let ep =
            call(&mut c, "IpamDriver.RequestAddress", json!({"PoolID": pool_id, "Address": "", "Options": null})).await;
        assert_eq!(ep["Address"], "172.17.0.2/16");

        let bad = c
            .call_raw(
                "IpamDriver.RequestAddress",
                json!({"PoolID": pool_id, "Address": "10.0.0.1", "Options": null}).to_string(),
            )
            .await
            .unwrap();
        assert_eq!(bad.status, 500);
        assert_eq!(bad.err(), Some("address 10.0.0.1 is outside pool 172.17.0.0/16"));
        let unknown = c.call_raw("IpamDriver.ReleasePool", json!({"PoolID": "nonsense"}).to_string()).await.unwrap();
        assert!(unknown.err().unwrap().contains("not a pool id"), "{unknown:?}");
        pool_id
    }; // SIGKILL

    let driver = start(dir.path(), "h1", None);
    let mut c = driver.client().await;
    let ep = call(&mut c, "IpamDriver.RequestAddress", json!({"PoolID": pool_id, "Address": "", "Options": {}})).await;
    assert_eq!(ep["Address"], "172.17.0.3/16", "state survived the kill");
    call(&mut c, "IpamDriver.ReleaseAddress", json!({"PoolID": pool_id, "Address": "172.17.0.3"})).await;
    call(&mut c, "IpamDriver.ReleaseAddress", json!({"PoolID": pool_id, "Address": "172.17.0.2"})).await;
    call(&mut c, "IpamDriver.ReleaseAddress", json!({"PoolID": pool_id, "Address": "172.17.0.1"})).await;
    assert_eq!(call(&mut c, "IpamDriver.ReleasePool", json!({"PoolID": pool_id})).await, json!({}));
    let gone = c
        .call_raw("IpamDriver.RequestAddress", json!({"PoolID": pool_id, "Address": "", "Options": {}}).to_string())
        .await
        .unwrap();
    assert!(gone.err().unwrap().starts_with("unknown pool id"), "{gone:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_share_pools_through_etcd() {
    let etcd = Etcd::start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = start(dir.path(), "host-a", Some(&etcd.url()));
    let b = start(dir.path(), "host-b", Some(&etcd.url()));
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    let request =
        json!({"AddressSpace": "GlobalDefault", "Pool": "10.30.0.0/24", "SubPool": "", "Options": {}, "V6": false});
    let pa = call(&mut ca, "IpamDriver.RequestPool", request.clone()).await;
    let pb = call(&mut cb, "IpamDriver.RequestPool", request).await;
    assert_eq!(pa, pb);
    let id = pa["PoolID"].clone();
    let gw = json!({"PoolID": id, "Address": "", "Options": gateway_opts()});
    let ga = call(&mut ca, "IpamDriver.RequestAddress", gw.clone()).await;
    let gb = call(&mut cb, "IpamDriver.RequestAddress", gw).await;
    assert_eq!((ga["Address"].as_str(), gb["Address"].as_str()), (Some("10.30.0.1/24"), Some("10.30.0.1/24")));
    let ep = json!({"PoolID": id, "Address": "", "Options": {}});
    let ea = call(&mut ca, "IpamDriver.RequestAddress", ep.clone()).await;
    let eb = call(&mut cb, "IpamDriver.RequestAddress", ep).await;
    assert_ne!(ea["Address"], eb["Address"]);
}

/// etcd with authentication on: loom-ipam with the right user and password file serves and
/// stores its pools there; with a wrong password it stops within seconds, saying authentication.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_with_user_and_password_the_binary_serves_with_the_right_one_and_stops_on_a_wrong_one() {
    let etcd = Etcd::start().await;
    {
        let mut admin = etcd_client::Client::connect([format!("http://{}", etcd.endpoint())], None).await.unwrap();
        admin.user_add("root", "right horse", None).await.unwrap();
        admin.user_grant_role("root", "root").await.unwrap();
        admin.auth_enable().await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let (right, wrong) = (dir.path().join("right"), dir.path().join("wrong"));
    std::fs::write(&right, "right horse\n").unwrap();
    std::fs::write(&wrong, "battery staple\n").unwrap();
    let url = etcd.url();
    let args = |password: &Path| -> Vec<String> {
        ["--host-id", "h1", "--store", &url, "--store-user", "root", "--store-password-file"]
            .iter()
            .map(|s| s.to_string())
            .chain([password.display().to_string()])
            .collect()
    };

    let right_args = args(&right);
    let right_args: Vec<&str> = right_args.iter().map(String::as_str).collect();
    {
        let served = Served::start(BIN, &dir.path().join("right.sock"), &dir.path().join("state-right"), &right_args);
        let mut c = served.client().await;
        let request =
            json!({"AddressSpace": "GlobalDefault", "Pool": "10.31.0.0/24", "SubPool": "", "Options": {}, "V6": false});
        let pool = call(&mut c, "IpamDriver.RequestPool", request).await;
        assert_eq!(pool["Pool"], "10.31.0.0/24");
    }
    let mut admin = etcd_client::Client::connect(
        [format!("http://{}", etcd.endpoint())],
        Some(etcd_client::ConnectOptions::new().with_user("root", "right horse")),
    )
    .await
    .unwrap();
    let keys =
        admin.get("/netloom/", Some(etcd_client::GetOptions::new().with_prefix().with_keys_only())).await.unwrap();
    assert!(!keys.kvs().is_empty(), "the pool was stored in the etcd that wants a password");

    let wrong_args = args(&wrong);
    let wrong_args: Vec<&str> = wrong_args.iter().map(String::as_str).collect();
    let (status, stderr, took) = Served::run_to_exit(
        BIN,
        &dir.path().join("wrong.sock"),
        &dir.path().join("state-wrong"),
        &wrong_args,
        Duration::from_secs(20),
    );
    eprintln!("wrong password: {status:?} after {took:?}: {}", stderr.trim());
    let status = status.expect("loom-ipam with a wrong password must stop by itself");
    assert!(!status.success(), "a wrong password must be a failure: {status}");
    assert!(took < Duration::from_secs(10), "stopped only after {took:?}");
    assert!(stderr.contains("authentication"), "the message must name authentication: {stderr}");
}
