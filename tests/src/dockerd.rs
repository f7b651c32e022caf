//! Which dockerd to run, and how.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use anyhow::{anyhow, bail, Result};

use crate::util::{self, cache_dir};

/// The Docker engines the scenarios run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DockerVersion {
    /// Debian 12's docker.io 20.10 (/usr/sbin/dockerd): the last engine with --cluster-store.
    V20,
    /// Docker 26, fetched by tests/fetch-docker26.sh into $NETLOOM_CACHE/docker26/.
    V26,
}

impl DockerVersion {
    pub const ALL: [DockerVersion; 2] = [DockerVersion::V20, DockerVersion::V26];

    /// "20.10" / "26": the prefix `dockerd --version` must show.
    pub fn label(self) -> &'static str {
        match self {
            DockerVersion::V20 => "20.10",
            DockerVersion::V26 => "26",
        }
    }

    /// The directory tests/fetch-docker26.sh fills.
    pub fn v26_dir() -> PathBuf {
        cache_dir().join("docker26")
    }

    fn candidates(self) -> Vec<PathBuf> {
        let env = match self {
            DockerVersion::V20 => "NETLOOM_DOCKERD_V20",
            DockerVersion::V26 => "NETLOOM_DOCKERD_V26",
        };
        if let Some(p) = util::env_path(env) {
            return vec![p];
        }
        match self {
            DockerVersion::V20 => vec![PathBuf::from("/usr/sbin/dockerd")],
            DockerVersion::V26 => {
                let d = Self::v26_dir();
                ["usr/sbin/dockerd", "usr/bin/dockerd", "bin/dockerd", "dockerd"].iter().map(|p| d.join(p)).collect()
            }
        }
    }

    /// The dockerd binary, checked once per process with `dockerd --version`. A missing binary is
    /// an error (a test never skips silently).
    pub fn dockerd(self) -> Result<PathBuf> {
        static CHECKED: OnceLock<Mutex<Vec<(DockerVersion, PathBuf)>>> = OnceLock::new();
        let checked = CHECKED.get_or_init(Default::default);
        if let Some((_, p)) = checked.lock().unwrap().iter().find(|(v, _)| *v == self) {
            return Ok(p.clone());
        }
        let cands = self.candidates();
        let Some(bin) = cands.iter().find(|p| p.is_file()).cloned() else {
            let looked = cands.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
            return Err(match self {
                DockerVersion::V26 => anyhow!(
                    "Docker 26's dockerd is missing (looked at {looked}). Run tests/fetch-docker26.sh \
                     first (as root; it fills ${{NETLOOM_CACHE:-/var/cache/netloom-tests}}/docker26)"
                ),
                DockerVersion::V20 => {
                    anyhow!(
                        "Docker 20.10's dockerd is missing (looked at {looked}). Run tests/install-deps.sh (docker.io)"
                    )
                }
            });
        };
        let out = util::run(Command::new(&bin).arg("--version").env("PATH", self.path_env(&bin)))?;
        // "Docker version 20.10.24+dfsg1, build 5d6db84"
        let version = out.split_whitespace().nth(2).unwrap_or("").trim_end_matches(',');
        if !version.starts_with(&format!("{}.", self.label())) {
            bail!("{} is Docker {version:?}, not {}: {}", bin.display(), self.label(), out.trim());
        }
        checked.lock().unwrap().push((self, bin.clone()));
        Ok(bin)
    }

    /// PATH for dockerd. For a fetched engine, its own directories come first so that it finds
    /// the helpers shipped with it (docker-proxy, docker-init, containerd if fetched too).
    pub fn path_env(self, dockerd: &Path) -> String {
        let base = std::env::var("PATH")
            .unwrap_or_else(|_| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
        if self == DockerVersion::V20 {
            return base;
        }
        let root = Self::v26_dir();
        let mut dirs: Vec<PathBuf> = dockerd.parent().into_iter().map(Path::to_path_buf).collect();
        for d in ["usr/sbin", "usr/bin", "usr/libexec/docker", "usr/lib/docker", "bin"] {
            dirs.push(root.join(d));
        }
        let mut parts: Vec<String> = Vec::new();
        for d in dirs {
            let s = d.display().to_string();
            if d.is_dir() && !parts.contains(&s) {
                parts.push(s);
            }
        }
        parts.push(base);
        parts.join(":")
    }
}

impl std::fmt::Display for DockerVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Docker {}", self.label())
    }
}

/// The docker CLI: $NETLOOM_DOCKER_CLI, else `docker` from PATH. Any CLI from 20.10 on talks to
/// both engines (it negotiates the API version).
pub fn docker_cli() -> String {
    std::env::var("NETLOOM_DOCKER_CLI").ok().filter(|v| !v.is_empty()).unwrap_or_else(|| "docker".into())
}
