//! TLS to Consul agents (`--store-ca`, and a client certificate for agents that verify
//! incoming connections), with rustls.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::credentials::TlsMaterial;

/// The body Consul (Go's TLS server) answers a plain HTTP request sent to its HTTPS port with.
pub const PLAIN_TO_TLS: &str = "Client sent an HTTP request to an HTTPS server";

/// A client configuration trusting only the given CA, with the client certificate if one is given.
pub fn client_config(material: &TlsMaterial) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    let mut added = 0;
    for cert in CertificateDer::pem_slice_iter(&material.ca_pem) {
        let cert = cert.map_err(|e| format!("reading the CA certificate (--store-ca): {e}"))?;
        roots.add(cert).map_err(|e| format!("the CA certificate (--store-ca) is unusable: {e}"))?;
        added += 1;
    }
    if added == 0 {
        return Err("the CA file (--store-ca) holds no PEM certificate".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .with_root_certificates(roots);
    match &material.client {
        None => Ok(builder.with_no_client_auth()),
        Some(identity) => {
            let chain = CertificateDer::pem_slice_iter(&identity.cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("reading the client certificate (--store-cert): {e}"))?;
            if chain.is_empty() {
                return Err("the client certificate file (--store-cert) holds no PEM certificate".into());
            }
            let key = PrivateKeyDer::from_pem_slice(&identity.key_pem)
                .map_err(|e| format!("reading the client key (--store-key): {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("the client certificate and key (--store-cert/--store-key) do not fit: {e}"))
        }
    }
}

/// A configuration that trusts nothing, for a client that only speaks plain HTTP.
pub fn client_config_without_roots() -> ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring offers the default protocol versions")
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth()
}

/// Whether an error chain comes from the TLS layer (handshake refused, unknown issuer, bad
/// certificate, a plain-text peer...), which no retry mends.
pub fn is_tls_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    if e.downcast_ref::<rustls::Error>().is_some() {
        return true;
    }
    // An io::Error's source() skips the error it wraps, and TLS errors come wrapped twice.
    if let Some(inner) = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
        if is_tls_failure(inner) {
            return true;
        }
    }
    e.source().is_some_and(is_tls_failure)
}
