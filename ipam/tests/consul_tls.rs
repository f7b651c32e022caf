//! The Consul backend over HTTPS (`--store-ca`, a client certificate for an agent that verifies
//! incoming connections) against the fake agent serving TLS with certificates made by openssl:
//! the right settings work, and every wrong one is refused when the store is opened, fast, with
//! an error naming TLS.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;

use common::fake_consul::FakeConsul;
use common::opening::{is_tls, open, refused};
use common::pki::{Issued, TestPki};
use netloom_ipam::store::CredentialFiles;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The agent's TLS: its certificate, and when `client_ca` is given, only clients it issued.
fn acceptor(server: &Issued, client_ca: Option<&Path>) -> TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca).unwrap() {
                roots.add(cert.unwrap()).unwrap();
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let chain = CertificateDer::pem_file_iter(&server.cert).unwrap().map(Result::unwrap).collect();
    let key = PrivateKeyDer::from_pem_file(&server.key).unwrap();
    TlsAcceptor::from(Arc::new(builder.with_single_cert(chain, key).unwrap()))
}

#[tokio::test(flavor = "multi_thread")]
async fn https_with_the_agents_ca_works_and_each_wrong_setting_is_refused_naming_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path(), "good").unwrap();
    let other = TestPki::new(dir.path(), "other").unwrap();
    let server = pki.server("agent", &[LOOPBACK]).unwrap();
    let agent = FakeConsul::start_tls(acceptor(&server, None)).await;
    let url = agent.url();
    let state = dir.path().join("state");

    let good = CredentialFiles { ca: Some(pki.ca()), ..Default::default() };
    open(&url, &good, &state).await.expect("HTTPS with the agent's CA works");

    let cases = [
        ("no --store-ca (plain HTTP to the HTTPS port)", CredentialFiles::default(), "--store-ca"),
        (
            "a CA that did not sign the agent's certificate",
            CredentialFiles { ca: Some(other.ca()), ..good.clone() },
            "UnknownIssuer",
        ),
    ];
    for (case, files, says) in &cases {
        let message = refused(&url, files, &state, is_tls).await;
        eprintln!("{case}: {message}");
        assert!(message.contains(says), "{case}: the message should say {says}: {message}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_that_verifies_clients_takes_only_a_certificate_its_ca_issued() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path(), "good").unwrap();
    let other = TestPki::new(dir.path(), "other").unwrap();
    let server = pki.server("agent", &[LOOPBACK]).unwrap();
    let agent = FakeConsul::start_tls(acceptor(&server, Some(&pki.ca()))).await;
    let url = agent.url();
    let state = dir.path().join("state");
    let client = pki.client("netloom").unwrap();
    let stranger = other.client("stranger").unwrap();

    let good =
        CredentialFiles { ca: Some(pki.ca()), cert: Some(client.cert), key: Some(client.key), ..Default::default() };
    open(&url, &good, &state).await.expect("a client certificate the agent's CA issued works");

    let cases = [
        ("no client certificate", CredentialFiles { ca: Some(pki.ca()), ..Default::default() }),
        (
            "a client certificate of another CA",
            CredentialFiles { cert: Some(stranger.cert), key: Some(stranger.key), ..good.clone() },
        ),
    ];
    for (case, files) in &cases {
        let message = refused(&url, files, &state, is_tls).await;
        eprintln!("{case}: {message}");
    }
}
