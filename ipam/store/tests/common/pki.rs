//! Certificates for TLS tests, made with the openssl CLI: a CA of its own, server certificates for
//! given IP addresses and client certificates, all in one directory the caller owns.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

pub struct TestPki {
    dir: PathBuf,
    name: String,
}

/// A certificate and its key, PEM files.
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(args: &[&str]) -> Result<()> {
    let out = Command::new("openssl").args(args).output().context("running openssl (is it installed?)")?;
    if !out.status.success() {
        bail!("openssl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn path_str(path: &Path) -> String {
    path.display().to_string()
}

impl TestPki {
    /// A new CA whose files are `<dir>/<name>-ca.pem` and `<name>-ca.key`.
    pub fn new(dir: &Path, name: &str) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let pki = TestPki { dir: dir.to_path_buf(), name: name.to_string() };
        let (ca, key) = (path_str(&pki.ca()), path_str(&pki.ca_key()));
        let subject = format!("/CN={name} test CA");
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &subject,
            "-keyout",
            &key,
            "-out",
            &ca,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ])?;
        Ok(pki)
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.pem", self.name))
    }

    fn ca_key(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.key", self.name))
    }

    /// A server certificate valid for `ips` (also usable as a client certificate, as etcd's
    /// members present it to each other).
    pub fn server(&self, label: &str, ips: &[IpAddr]) -> Result<Issued> {
        let sans: Vec<String> = ips.iter().map(|ip| format!("IP:{ip}")).collect();
        self.issue(label, &format!("subjectAltName={}\nextendedKeyUsage=serverAuth,clientAuth\n", sans.join(",")))
    }

    /// A client certificate whose common name is `label` (etcd takes it as the user name).
    pub fn client(&self, label: &str) -> Result<Issued> {
        self.issue(label, "extendedKeyUsage=clientAuth\n")
    }

    /// etcd's options to serve clients over TLS with this CA's `server` certificate and to accept
    /// only clients whose certificate this CA issued.
    pub fn etcd_client_tls_args(&self, server: &Issued) -> Vec<String> {
        vec![
            format!("--cert-file={}", server.cert.display()),
            format!("--key-file={}", server.key.display()),
            format!("--trusted-ca-file={}", self.ca().display()),
            "--client-cert-auth=true".to_string(),
        ]
    }

    fn issue(&self, label: &str, extensions: &str) -> Result<Issued> {
        let base = self.dir.join(format!("{}-{label}", self.name));
        let issued = Issued { cert: base.with_extension("pem"), key: base.with_extension("key") };
        let (csr, ext) = (base.with_extension("csr"), base.with_extension("ext"));
        std::fs::write(&ext, format!("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n{extensions}"))?;
        let subject = format!("/CN={label}");
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &subject,
            "-keyout",
            &path_str(&issued.key),
            "-out",
            &path_str(&csr),
        ])?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            &path_str(&csr),
            "-CA",
            &path_str(&self.ca()),
            "-CAkey",
            &path_str(&self.ca_key()),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &path_str(&ext),
            "-out",
            &path_str(&issued.cert),
        ])?;
        Ok(issued)
    }
}
