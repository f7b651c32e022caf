//! The etcd backend against a real etcd with TLS and client certificates, and with user/password
//! authentication: the right settings work, and every wrong one is refused when the store is
//! opened, fast, with an error naming TLS or authentication.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use common::local_etcd::LocalEtcd;
use common::opening::{is_auth, is_tls, open, refused};
use common::pki::TestPki;
use netloom_store::{open_with, CredentialFiles, StoreError, StoreOptions};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[tokio::test(flavor = "multi_thread")]
async fn tls_with_a_client_certificate_works_and_each_wrong_setting_is_refused_naming_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path(), "good").unwrap();
    let stranger = TestPki::new(dir.path(), "stranger").unwrap();
    let server = pki.server("etcd", &[LOOPBACK]).unwrap();
    let client = pki.client("root").unwrap();
    let foreign_client = stranger.client("root").unwrap();
    let etcd = LocalEtcd::start(dir.path(), "https", &pki.etcd_client_tls_args(&server));
    let url = etcd.url();
    let state = dir.path().join("state");

    let good = CredentialFiles {
        ca: Some(pki.ca()),
        cert: Some(client.cert.clone()),
        key: Some(client.key.clone()),
        ..Default::default()
    };
    open(&url, &good, &state).await.expect("the CA and a client certificate it issued work");

    let wrong: Vec<(&str, CredentialFiles)> = vec![
        ("no CA: plain text to a TLS port", CredentialFiles::default()),
        ("another CA", CredentialFiles { ca: Some(stranger.ca()), ..good.clone() }),
        ("no client certificate", CredentialFiles { ca: Some(pki.ca()), ..Default::default() }),
        (
            "a client certificate from another CA",
            CredentialFiles {
                cert: Some(foreign_client.cert.clone()),
                key: Some(foreign_client.key.clone()),
                ..good.clone()
            },
        ),
    ];
    let mut refusals = 0;
    for (case, files) in &wrong {
        eprintln!("trying {case}");
        let message = refused(&url, files, &state, is_tls).await;
        eprintln!("{case}: {message}");
        refusals += 1;
    }
    assert_eq!(refusals, wrong.len(), "every wrong TLS setting is refused");
    let message = refused(&url, &CredentialFiles::default(), &state, is_tls).await;
    assert!(message.contains("--store-ca"), "plain text to TLS etcd tells the user what to give: {message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn authentication_the_right_password_works_a_wrong_or_missing_one_is_refused_naming_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = LocalEtcd::start(dir.path(), "http", &[]);
    let url = etcd.url();
    let state = dir.path().join("state");
    {
        let endpoint = url.replace("etcd://", "http://");
        let mut admin = etcd_client::Client::connect([endpoint], None).await.unwrap();
        admin.user_add("root", "right horse", None).await.unwrap();
        admin.user_grant_role("root", "root").await.unwrap();
        admin.auth_enable().await.unwrap();
    }
    let password = |name: &str, text: &str| -> Option<PathBuf> {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        Some(path)
    };
    let good = CredentialFiles {
        user: Some("root".into()),
        password_file: password("right", "right horse\n"),
        ..Default::default()
    };
    open(&url, &good, &state).await.expect("the right password works");

    let wrong: Vec<(&str, CredentialFiles)> = vec![
        ("wrong password", CredentialFiles { password_file: password("wrong", "battery staple"), ..good.clone() }),
        ("unknown user", CredentialFiles { user: Some("nobody".into()), ..good.clone() }),
        ("no user at all", CredentialFiles::default()),
    ];
    let mut refusals = 0;
    for (case, files) in &wrong {
        let message = refused(&url, files, &state, is_auth).await;
        eprintln!("{case}: {message}");
        refusals += 1;
    }
    assert_eq!(refusals, wrong.len(), "every wrong credential is refused");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_etcd_is_not_a_misconfiguration_the_store_opens_and_requests_fail_as_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path(), "good").unwrap();
    let client = pki.client("root").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("etcd://127.0.0.1:{port}");
    let files = CredentialFiles {
        ca: Some(pki.ca()),
        cert: Some(client.cert.clone()),
        key: Some(client.key.clone()),
        ..Default::default()
    };
    let options = StoreOptions { credentials: files.load(Some(&url)).unwrap(), ..StoreOptions::default() };
    let store = open_with(Some(&url), &dir.path().join("state"), options).await.expect("opens: etcd may come later");
    let err = store.get("k").await.expect_err("nobody listens");
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    assert!(!err.is_misconfiguration());
}
