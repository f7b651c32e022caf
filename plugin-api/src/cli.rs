//! Command-line options every netloom binary shares, and logging set-up.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use netloom_store::{CredentialFiles, StoreOptions};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Unix socket to serve [default: /run/docker/plugins/<binary>.sock]
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Directory for persistent state and the embedded store [default: /var/lib/netloom/<binary>]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Store URL: etcd://h1:2379,h2:2379 or consul://host:8500 [default: embedded store in --state-dir]
    #[arg(long, value_name = "URL", env = "NETLOOM_STORE")]
    pub store: Option<String>,

    #[command(flatten)]
    pub store_credentials: StoreCredentialArgs,

    /// dockerd's Engine API, asked which networks and endpoints Docker really has (what it no
    /// longer has is removed): unix:///path or tcp://host:port; `none` turns this off
    #[arg(long, value_name = "URL", default_value = crate::engine::DEFAULT_DOCKER_HOST, env = "NETLOOM_DOCKER_HOST")]
    pub docker_host: String,

    /// The name Docker knows this driver by, when it is not the socket's file name: a managed
    /// plugin's name (netloom/loom-bridge:latest), whose socket is still loom-bridge.sock
    #[arg(long, value_name = "NAME", env = "NETLOOM_DOCKER_DRIVER_NAME")]
    pub docker_driver_name: Option<String>,

    /// Seconds between two reconciliations against Docker (also run at start and on Docker's
    /// network events)
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub reconcile_interval: u64,

    /// Serve Prometheus metrics as GET http://HOST:PORT/metrics [default: off]
    #[arg(long, value_name = "HOST:PORT", env = "NETLOOM_METRICS_ADDR")]
    pub metrics_addr: Option<String>,

    /// Log filter: error, warn, info, debug, trace, or a tracing directive such as netloom=debug
    #[arg(long, value_name = "LEVEL", default_value = "info", env = "NETLOOM_LOG")]
    pub log_level: String,

    /// Log line format
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// TLS and credentials for a shared `--store`; every file is read and checked at start.
#[derive(Debug, Clone, Default, Args)]
pub struct StoreCredentialArgs {
    /// CA certificate(s), PEM, the store's certificate must chain to; TLS is on when given
    #[arg(long, value_name = "FILE", env = "NETLOOM_STORE_CA")]
    pub store_ca: Option<PathBuf>,

    /// Client certificate, PEM, for a store that wants one (needs --store-key and --store-ca)
    #[arg(long, value_name = "FILE", env = "NETLOOM_STORE_CERT")]
    pub store_cert: Option<PathBuf>,

    /// The client certificate's private key, PEM
    #[arg(long, value_name = "FILE", env = "NETLOOM_STORE_KEY")]
    pub store_key: Option<PathBuf>,

    /// etcd user (needs --store-password-file)
    #[arg(long, value_name = "NAME", env = "NETLOOM_STORE_USER")]
    pub store_user: Option<String>,

    /// File holding the etcd user's password
    #[arg(long, value_name = "FILE", env = "NETLOOM_STORE_PASSWORD_FILE")]
    pub store_password_file: Option<PathBuf>,

    /// File holding a Consul ACL token, sent with every request
    #[arg(long, value_name = "FILE", env = "NETLOOM_STORE_TOKEN_FILE")]
    pub store_token_file: Option<PathBuf>,
}

impl StoreCredentialArgs {
    fn files(&self) -> CredentialFiles {
        CredentialFiles {
            ca: self.store_ca.clone(),
            cert: self.store_cert.clone(),
            key: self.store_key.clone(),
            user: self.store_user.clone(),
            password_file: self.store_password_file.clone(),
            token_file: self.store_token_file.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The options with every default filled in for one binary.
#[derive(Debug, Clone)]
pub struct Settings {
    pub name: String,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub store: Option<String>,
    pub store_credentials: CredentialFiles,
    /// `None`: `--docker-host none`, no reconciliation against Docker.
    pub docker_host: Option<String>,
    pub reconcile_interval: std::time::Duration,
    /// The name Docker's networks give this driver (`--docker-driver-name`, else the socket's
    /// file stem).
    pub docker_driver_name: String,
}

impl Settings {
    /// How to open `--store`: its TLS material and credentials read from their files, checked
    /// against each other and the store URL, so a wrong option stops the binary at start.
    pub fn store_options(&self) -> anyhow::Result<StoreOptions> {
        let credentials = self.store_credentials.load(self.store.as_deref())?;
        Ok(StoreOptions { credentials, ..StoreOptions::default() })
    }

    /// This host's id for keys in a shared store, kept in `<state-dir>/host-id` (made on first
    /// use). Host names are not used: two hosts may well share one.
    pub fn host_id(&self) -> anyhow::Result<String> {
        use anyhow::Context;
        use std::io::Read;
        let path = self.state_dir.join("host-id");
        if let Ok(id) = std::fs::read_to_string(&path) {
            let id = id.trim();
            if !id.is_empty() {
                return Ok(id.to_string());
            }
        }
        let mut bytes = [0u8; 8];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .context("reading /dev/urandom")?;
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::create_dir_all(&self.state_dir).with_context(|| format!("creating {}", self.state_dir.display()))?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, format!("{id}\n")).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(id)
    }
}

impl CommonArgs {
    pub fn settings(&self, name: &str) -> Settings {
        let socket = self.socket.clone().unwrap_or_else(|| PathBuf::from(format!("/run/docker/plugins/{name}.sock")));
        Settings {
            docker_driver_name: docker_driver_name(self.docker_driver_name.as_deref(), &socket),
            socket,
            name: name.to_string(),
            state_dir: self.state_dir.clone().unwrap_or_else(|| PathBuf::from(format!("/var/lib/netloom/{name}"))),
            store: self.store.clone().filter(|s| !s.is_empty()),
            store_credentials: self.store_credentials.files(),
            docker_host: Some(self.docker_host.clone()).filter(|h| !h.is_empty() && h != "none"),
            reconcile_interval: std::time::Duration::from_secs(self.reconcile_interval),
        }
    }

    /// `--metrics-addr`, unless empty (the environment variable set to nothing).
    pub fn metrics_addr(&self) -> Option<&str> {
        self.metrics_addr.as_deref().filter(|addr| !addr.is_empty())
    }

    pub fn init_logging(&self) -> anyhow::Result<()> {
        EnvFilter::try_new(&self.log_level)
            .map_err(|e| anyhow::anyhow!("invalid --log-level {:?}: {e}", self.log_level))?;
        let filter = EnvFilter::new(quiet_libraries(&self.log_level));
        let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
        let result = match self.log_format {
            LogFormat::Text => builder.try_init(),
            LogFormat::Json => builder.json().flatten_event(true).try_init(),
        };
        result.map_err(|e| anyhow::anyhow!("setting up logging: {e}"))
    }
}

/// Docker calls a plugin by its socket's file name, unless it is a managed plugin (named by
/// `docker plugin create`), whose name has to be given.
fn docker_driver_name(given: Option<&str>, socket: &std::path::Path) -> String {
    match given.map(str::trim).filter(|name| !name.is_empty()) {
        Some(name) => name.to_string(),
        None => socket.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
    }
}

/// Libraries that log every request they serve at info: kept at warn unless `--log-level` names
/// them (e.g. `info,hickory_server=info` to see every DNS query).
const CHATTY: &[&str] = &["hickory_server"];

fn quiet_libraries(level: &str) -> String {
    let mut directives = level.to_string();
    for target in CHATTY {
        if !level.contains(target) {
            directives.push_str(&format!(",{target}=warn"));
        }
    }
    directives
}

#[cfg(test)]
mod logging_tests {
    use super::quiet_libraries;

    #[test]
    fn docker_knows_a_driver_by_its_socket_unless_a_name_is_given() {
        use super::docker_driver_name;
        let socket = std::path::Path::new("/run/docker/plugins/loom-bridge.sock");
        assert_eq!(docker_driver_name(None, socket), "loom-bridge");
        assert_eq!(docker_driver_name(Some(" "), socket), "loom-bridge");
        assert_eq!(docker_driver_name(Some("netloom/loom-bridge:latest"), socket), "netloom/loom-bridge:latest");
    }

    #[test]
    fn chatty_libraries_stay_at_warn_unless_named() {
        assert_eq!(quiet_libraries("info"), "info,hickory_server=warn");
        assert_eq!(quiet_libraries("debug,hickory_server=info"), "debug,hickory_server=info");
    }
}
