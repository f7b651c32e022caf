use super::*;

const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";
const ETCD: Option<&str> = Some("etcd://127.0.0.1:2379");
const CONSUL: Option<&str> = Some("consul://127.0.0.1:8500");

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }

    fn file(&self, name: &str, text: &str) -> Option<PathBuf> {
        let path = self.0.path().join(name);
        std::fs::write(&path, text).unwrap();
        Some(path)
    }
}

fn refused(files: &CredentialFiles, url: Option<&str>) -> String {
    match files.load(url) {
        Err(CredentialsError(message)) => message,
        Ok(creds) => panic!("{files:?} with {url:?} was accepted: {creds:?}"),
    }
}

#[test]
fn nothing_given_is_plain() {
    for url in [None, ETCD, CONSUL] {
        assert!(CredentialFiles::default().load(url).unwrap().is_empty());
    }
}

#[test]
fn tls_with_a_client_certificate_and_a_password_are_read() {
    let dir = Dir::new();
    let files = CredentialFiles {
        ca: dir.file("ca.pem", CERT),
        cert: dir.file("client.pem", CERT),
        key: dir.file("client.key", KEY),
        user: Some("root".into()),
        password_file: dir.file("password", "s3cret\n"),
        token_file: None,
    };
    let creds = files.load(ETCD).unwrap();
    let tls = creds.tls.as_ref().expect("TLS is on with a CA");
    assert_eq!(tls.ca_pem, CERT.as_bytes());
    assert_eq!(tls.client.as_ref().unwrap().key_pem, KEY.as_bytes());
    assert_eq!(creds.user.as_ref().unwrap().password, "s3cret", "the trailing newline is not part of it");
    let shown = format!("{creds:?}");
    assert!(!shown.contains("s3cret") && !shown.contains("MIIE"), "secrets leak into logs: {shown}");
}

#[test]
fn a_consul_token_is_read() {
    let dir = Dir::new();
    let files = CredentialFiles { token_file: dir.file("token", "abcd-ef\r\n"), ..Default::default() };
    let creds = files.load(CONSUL).unwrap();
    assert_eq!(creds.token.as_deref(), Some("abcd-ef"));
    assert!(!format!("{creds:?}").contains("abcd"));
}

#[test]
fn options_that_do_not_fit_together_are_refused_by_name() {
    let dir = Dir::new();
    let (ca, cert, key) = (dir.file("ca.pem", CERT), dir.file("c.pem", CERT), dir.file("c.key", KEY));
    let password = dir.file("password", "pw");
    let token = dir.file("token", "t");
    let cases: Vec<(CredentialFiles, Option<&str>, &str)> = vec![
        (CredentialFiles { ca: ca.clone(), cert: cert.clone(), ..Default::default() }, ETCD, "--store-key"),
        (CredentialFiles { ca: ca.clone(), key: key.clone(), ..Default::default() }, ETCD, "--store-cert"),
        (CredentialFiles { cert: cert.clone(), key: key.clone(), ..Default::default() }, ETCD, "--store-ca"),
        (CredentialFiles { user: Some("root".into()), ..Default::default() }, ETCD, "--store-password-file"),
        (CredentialFiles { password_file: password.clone(), ..Default::default() }, ETCD, "--store-user"),
        (CredentialFiles { token_file: token.clone(), ..Default::default() }, ETCD, "Consul"),
        (CredentialFiles { user: Some("root".into()), password_file: password, ..Default::default() }, CONSUL, "etcd"),
        (CredentialFiles { ca: ca.clone(), ..Default::default() }, None, "--store-ca"),
        (CredentialFiles { token_file: token, ..Default::default() }, None, "--store-token-file"),
    ];
    let total = cases.len();
    let mut refused_count = 0;
    for (files, url, named) in cases {
        let message = refused(&files, url);
        assert!(message.contains(named), "{files:?}: {message:?} does not name {named}");
        refused_count += 1;
    }
    assert_eq!(refused_count, total);
}

#[test]
fn unreadable_empty_or_wrong_files_are_refused_naming_the_option_and_file() {
    let dir = Dir::new();
    let missing = Some(dir.0.path().join("nope.pem"));
    let message = refused(&CredentialFiles { ca: missing, ..Default::default() }, ETCD);
    assert!(
        message.contains("--store-ca") && message.contains("nope.pem") && message.contains("cannot read"),
        "{message}"
    );

    let message = refused(&CredentialFiles { ca: dir.file("key-as-ca.pem", KEY), ..Default::default() }, ETCD);
    assert!(message.contains("--store-ca") && message.contains("CERTIFICATE"), "{message}");

    let swapped = CredentialFiles {
        ca: dir.file("ca.pem", CERT),
        cert: dir.file("c.pem", CERT),
        key: dir.file("cert-as-key.pem", CERT),
        ..Default::default()
    };
    assert!(refused(&swapped, ETCD).contains("--store-key"));

    let empty =
        CredentialFiles { user: Some("root".into()), password_file: dir.file("empty", "\n"), ..Default::default() };
    let message = refused(&empty, ETCD);
    assert!(message.contains("--store-password-file") && message.contains("empty"), "{message}");
}
