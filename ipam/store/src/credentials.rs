//! TLS material and credentials for a shared store, read from the files the `--store-*` options
//! name. Every file is read and checked once, at start, so a missing or wrong file stops the
//! binary with a message naming the option instead of failing on the first request.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::url::StoreUrl;

/// What the `--store-ca`, `--store-cert`, `--store-key`, `--store-user`, `--store-password-file`
/// and `--store-token-file` options name, before anything is read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredentialFiles {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
}

/// What a backend needs to reach a store that wants TLS or credentials.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// TLS is on when this is set.
    pub tls: Option<TlsMaterial>,
    /// etcd authentication.
    pub user: Option<UserPassword>,
    /// Consul ACL token, sent with every request.
    pub token: Option<String>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct TlsMaterial {
    /// PEM: the certificate authorities the store's certificate must chain to.
    pub ca_pem: Vec<u8>,
    pub client: Option<ClientIdentity>,
}

/// A client certificate and its key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct UserPassword {
    pub user: String,
    pub password: String,
}

/// A `--store-*` option that cannot be used as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CredentialsError(pub String);

// Secrets never reach a log line through `{:?}`.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("tls", &self.tls.as_ref().map(|t| if t.client.is_some() { "ca+client" } else { "ca" }))
            .field("user", &self.user.as_ref().map(|u| &u.user))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial").field("client_certificate", &self.client.is_some()).finish_non_exhaustive()
    }
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientIdentity(<redacted>)")
    }
}

impl fmt::Debug for UserPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserPassword").field("user", &self.user).finish_non_exhaustive()
    }
}

impl Credentials {
    pub fn is_empty(&self) -> bool {
        self.tls.is_none() && self.user.is_none() && self.token.is_none()
    }
}

impl CredentialFiles {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Checks the options against each other and against the store URL (`None`: the embedded
    /// store), then reads every file.
    pub fn load(&self, url: Option<&str>) -> Result<Credentials, CredentialsError> {
        let err = |m: String| Err(CredentialsError(m));
        let backend = match url.map(StoreUrl::parse) {
            None => None,
            Some(Ok(parsed)) => Some(parsed.backend()),
            // The URL's own error is reported by whoever opens the store.
            Some(Err(_)) => return Ok(Credentials::default()),
        };
        let Some(backend) = backend.filter(|b| *b != "embedded") else {
            if let Some(flag) = self.given().first() {
                return err(format!("{flag} is only for a shared store (--store etcd://… or consul://…)"));
            }
            return Ok(Credentials::default());
        };
        match (&self.cert, &self.key) {
            (Some(_), None) => {
                return err("--store-cert needs --store-key (the client certificate's private key)".into())
            }
            (None, Some(_)) => return err("--store-key needs --store-cert (the client certificate)".into()),
            (Some(_), Some(_)) if self.ca.is_none() => {
                return err("--store-cert needs --store-ca: a client certificate is only sent over TLS".into())
            }
            _ => {}
        }
        match (&self.user, &self.password_file) {
            (Some(_), None) => return err("--store-user needs --store-password-file".into()),
            (None, Some(_)) => return err("--store-password-file needs --store-user".into()),
            _ => {}
        }
        if backend == "etcd" && self.token_file.is_some() {
            return err(
                "--store-token-file is a Consul ACL token; etcd takes --store-user and --store-password-file".into()
            );
        }
        if backend == "consul" && self.user.is_some() {
            return err("--store-user is for etcd; Consul takes an ACL token with --store-token-file".into());
        }

        let tls = match &self.ca {
            None => None,
            Some(ca) => {
                let ca_pem = read_pem(ca, "--store-ca", "CERTIFICATE")?;
                let client = match (&self.cert, &self.key) {
                    (Some(cert), Some(key)) => Some(ClientIdentity {
                        cert_pem: read_pem(cert, "--store-cert", "CERTIFICATE")?,
                        key_pem: read_pem(key, "--store-key", "PRIVATE KEY")?,
                    }),
                    _ => None,
                };
                Some(TlsMaterial { ca_pem, client })
            }
        };
        let user = match (&self.user, &self.password_file) {
            (Some(user), Some(file)) if user.trim().is_empty() => {
                return err(format!("--store-user is empty (password file {})", file.display()))
            }
            (Some(user), Some(file)) => {
                Some(UserPassword { user: user.clone(), password: read_secret(file, "--store-password-file")? })
            }
            _ => None,
        };
        let token = match &self.token_file {
            Some(file) => Some(read_secret(file, "--store-token-file")?),
            None => None,
        };
        Ok(Credentials { tls, user, token })
    }

    fn given(&self) -> Vec<&'static str> {
        let flags = [
            ("--store-ca", self.ca.is_some()),
            ("--store-cert", self.cert.is_some()),
            ("--store-key", self.key.is_some()),
            ("--store-user", self.user.is_some()),
            ("--store-password-file", self.password_file.is_some()),
            ("--store-token-file", self.token_file.is_some()),
        ];
        flags.into_iter().filter(|(_, given)| *given).map(|(flag, _)| flag).collect()
    }
}

fn read(path: &Path, flag: &str) -> Result<Vec<u8>, CredentialsError> {
    std::fs::read(path).map_err(|e| CredentialsError(format!("{flag} {}: cannot read it: {e}", path.display())))
}

/// Reads a PEM file and checks it holds a block whose label ends with `label`.
fn read_pem(path: &Path, flag: &str, label: &str) -> Result<Vec<u8>, CredentialsError> {
    let pem = read(path, flag)?;
    let text = String::from_utf8_lossy(&pem);
    let has_block =
        text.lines().any(|l| l.starts_with("-----BEGIN ") && l.trim_end().ends_with(&format!("{label}-----")));
    if !has_block {
        return Err(CredentialsError(format!(
            "{flag} {}: no PEM \"{label}\" block in it (expected a file starting with -----BEGIN …{label}-----)",
            path.display()
        )));
    }
    Ok(pem)
}

/// A password or token: the file's text without the trailing newline editors add.
fn read_secret(path: &Path, flag: &str) -> Result<String, CredentialsError> {
    let bytes = read(path, flag)?;
    let text =
        String::from_utf8(bytes).map_err(|_| CredentialsError(format!("{flag} {}: not UTF-8 text", path.display())))?;
    let secret = text.trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        return Err(CredentialsError(format!("{flag} {}: the file is empty", path.display())));
    }
    Ok(secret.to_string())
}

#[cfg(test)]
#[path = "credentials_tests.rs"]
mod tests;
