//! The loom-null binary on a real socket: protocol errors, persistence across SIGKILL, SIGTERM
//! clean-up and single-instance refusal.

// The harness loom-ipam's binary tests use too.
#[path = "../../../ipam/tests/common/served.rs"]
#[allow(dead_code)]
mod served;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::json;
use served::Served;

const BIN: &str = env!("CARGO_BIN_EXE_loom-null");

/// No dockerd knows the networks these tests make over the socket: reconciliation against one
/// would remove them.
const NO_DOCKER: [&str; 2] = ["--docker-host", "none"];

fn start(socket: &Path, state: &Path) -> Served {
    Served::start(BIN, socket, state, &["--log-level", "debug", NO_DOCKER[0], NO_DOCKER[1]])
}

fn run_to_exit(socket: &Path, state: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .arg("--socket")
        .arg(socket)
        .arg("--state-dir")
        .arg(state)
        .args(NO_DOCKER)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("loom-null kept running instead of refusing to start");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn protocol_errors_come_back_as_err() {
    let dir = tempfile::tempdir().unwrap();
    let driver = start(&dir.path().join("loom-null.sock"), &dir.path().join("state"));
    let mut client = driver.client().await;

    let activate = client.call_raw("Plugin.Activate", "").await.unwrap();
    assert_eq!((activate.status, activate.body), (200, json!({"Implements": ["NetworkDriver"]})));

    for (method, body, status, text) in [
        ("NetworkDriver.CreateNetwork", "{\"NetworkID\": ", 500, "invalid NetworkDriver.CreateNetwork request"),
        ("NetworkDriver.CreateNetwork", "{\"Options\":{}}\n", 500, "missing field `NetworkID`"),
        ("NetworkDriver.CreateNetwork", "", 500, "empty"),
        ("NetworkDriver.Teleport", "{}", 404, "does not implement NetworkDriver.Teleport"),
        ("IpamDriver.RequestPool", "{}", 404, "does not implement"),
        (
            "NetworkDriver.CreateNetwork",
            "{\"NetworkID\":\"n\",\"Options\":{\"com.docker.network.generic\":{\"mtu\":\"9000\"}}}",
            500,
            "takes no driver options, but got: mtu",
        ),
        // Ids become record file names: a path is refused, nothing is written outside the state dir.
        (
            "NetworkDriver.CreateNetwork",
            "{\"NetworkID\":\"../../escaped\",\"Options\":{}}",
            500,
            "cannot name a record",
        ),
        (
            "NetworkDriver.CreateEndpoint",
            "{\"NetworkID\":\"n2\",\"EndpointID\":\"../../../escaped\",\"Interface\":{}}",
            500,
            "cannot name a record",
        ),
    ] {
        let reply = client.call_raw(method, body).await.unwrap();
        assert_eq!(reply.status, status, "{method} {body}: {reply:?}");
        let err = reply.err().unwrap_or_else(|| panic!("{method}: no Err in {reply:?}"));
        assert!(err.contains(text), "{method} {body}: {err}");
    }
    // A network recorded by an older loom-null (or lost with its state) is adopted: Docker asks
    // only for networks it made with this driver.
    let endpoint = json!({"NetworkID": "older", "EndpointID": "e", "Interface": {}});
    let created = client.call_raw("NetworkDriver.CreateEndpoint", endpoint.to_string()).await.unwrap();
    assert_eq!(created.status, 200, "{created:?}");
    let join = json!({"NetworkID": "older", "EndpointID": "e", "SandboxKey": "/var/run/docker/netns/x"});
    let joined = client.call_raw("NetworkDriver.Join", join.to_string()).await.unwrap();
    assert_eq!(joined.status, 200, "{joined:?}");
    let escaped: Vec<_> = walk(dir.path()).into_iter().filter(|p| p.ends_with("escaped")).collect();
    assert!(escaped.is_empty(), "record files written outside their directory: {escaped:?}");
    // The connection survives every error.
    let caps = client.call("NetworkDriver.GetCapabilities", &serde_json::Value::Null).await.unwrap();
    assert_eq!(caps, json!({"Scope": "local", "ConnectivityScope": "local"}));
}

#[tokio::test]
async fn state_survives_sigkill_and_sigterm_removes_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("plugins/loom-null.sock");
    let state = dir.path().join("state");
    let mut driver = start(&socket, &state);
    {
        let mut client = driver.client().await;
        let network = json!({"NetworkID": "net1", "Options": {"com.docker.network.generic": {}}, "IPv4Data": [{"Pool": "172.18.0.0/16"}], "IPv6Data": []});
        client.call("NetworkDriver.CreateNetwork", &network).await.unwrap();
        client.call("NetworkDriver.CreateNetwork", &network).await.expect("CreateNetwork is idempotent");
        let endpoint =
            json!({"NetworkID": "net1", "EndpointID": "ep1", "Interface": {"Address": "172.18.0.2/16"}, "Options": {}});
        assert_eq!(client.call("NetworkDriver.CreateEndpoint", &endpoint).await.unwrap(), json!({}));
    }
    assert!(!driver.signal(Signal::SIGKILL).success());
    assert!(socket.exists(), "a killed process leaves its socket behind");

    let mut driver = start(&socket, &state);
    let mut client = driver.client().await;
    let join =
        json!({"NetworkID": "net1", "EndpointID": "ep1", "SandboxKey": "/var/run/docker/netns/x", "Options": {}});
    let reply = client.call("NetworkDriver.Join", &join).await.expect("the endpoint survived the restart");
    assert_eq!(reply, json!({"DisableGatewayService": true}), "no interface and no docker_gwbridge");
    let err = client.call("NetworkDriver.DeleteNetwork", &json!({"NetworkID": "net1"})).await.unwrap_err().to_string();
    assert!(err.contains("still has 1 endpoint"), "{err}");
    for (method, body) in [
        ("NetworkDriver.Leave", json!({"NetworkID": "net1", "EndpointID": "ep1"})),
        ("NetworkDriver.DeleteEndpoint", json!({"NetworkID": "net1", "EndpointID": "ep1"})),
        ("NetworkDriver.DeleteNetwork", json!({"NetworkID": "net1"})),
        ("NetworkDriver.DeleteNetwork", json!({"NetworkID": "net1"})),
    ] {
        client.call(method, &body).await.unwrap();
    }
    drop(client);

    assert!(driver.signal(Signal::SIGTERM).success(), "SIGTERM is a clean exit");
    assert!(!socket.exists(), "SIGTERM removes the socket");
}

#[tokio::test]
async fn a_second_instance_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("loom-null.sock");
    let _first = start(&socket, &dir.path().join("state1"));

    let same_socket = run_to_exit(&socket, &dir.path().join("state2"), &[]);
    assert!(!same_socket.status.success());
    let stderr = String::from_utf8_lossy(&same_socket.stderr);
    assert!(stderr.contains("another process is already serving"), "{stderr}");
    assert!(socket.exists(), "the refused instance left the live socket alone");

    let same_state = run_to_exit(&dir.path().join("other.sock"), &dir.path().join("state1"), &[]);
    assert!(!same_state.status.success());
    let stderr = String::from_utf8_lossy(&same_state.stderr);
    assert!(stderr.contains("another instance is already running with state directory"), "{stderr}");
}

#[tokio::test]
async fn records_are_files_of_this_host_and_a_store_url_is_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // Nothing listens there: loom-null must not need it.
    let driver = Served::start(
        BIN,
        &dir.path().join("loom-null.sock"),
        &state,
        &["--store", "etcd://127.0.0.1:9", NO_DOCKER[0], NO_DOCKER[1]],
    );
    let mut client = driver.client().await;
    let network = json!({"NetworkID": "net1", "Options": {}, "IPv4Data": [], "IPv6Data": []});
    client.call("NetworkDriver.CreateNetwork", &network).await.unwrap();
    let endpoint = json!({"NetworkID": "net1", "EndpointID": "ep1", "Interface": {}, "Options": {}});
    client.call("NetworkDriver.CreateEndpoint", &endpoint).await.unwrap();

    let host_id = std::fs::read_to_string(state.join("host-id")).unwrap();
    let records = state.join("records/null").join(host_id.trim());
    let network_record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(records.join("networks/net1")).unwrap()).unwrap();
    assert_eq!(network_record, json!({"id": "net1"}));
    assert!(records.join("endpoints/net1/ep1").is_file());
    assert!(!state.join("store.redb").exists(), "no database next to the records");

    client.call("NetworkDriver.DeleteEndpoint", &json!({"NetworkID": "net1", "EndpointID": "ep1"})).await.unwrap();
    assert!(!records.join("endpoints/net1/ep1").exists());
    client.call("NetworkDriver.DeleteNetwork", &json!({"NetworkID": "net1"})).await.unwrap();
    assert!(!records.join("networks/net1").exists());
}

#[test]
fn a_bad_store_url_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_to_exit(&dir.path().join("loom-null.sock"), &dir.path().join("state"), &["--store", "zk://h:2181"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("zk://h:2181") && stderr.contains("etcd://"), "{stderr}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        }
        found.push(path);
    }
    found
}
