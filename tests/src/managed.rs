//! netloom drivers as Docker managed plugins: the bundle from examples/managed-plugin/build.sh,
//! created, configured and enabled through a host's dockerd, and what Docker keeps of it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::host::Host;
use crate::util::{self, timed};

/// How long `build.sh` may take (it copies binaries and libraries; it builds nothing when the
/// release binary is there).
const BUILD_LIMIT: Duration = Duration::from_secs(120);

/// Writes the managed-plugin bundle of `driver` into `dir` (config.json and rootfs) from the
/// binaries in `bin_dir()`.
pub fn build_bundle(driver: &str, dir: &Path) -> Result<()> {
    let script = util::workspace_root().join("examples/managed-plugin/build.sh");
    let mut cmd = timed(BUILD_LIMIT, &[script.display().to_string(), driver.to_string(), dir.display().to_string()]);
    cmd.env("NETLOOM_BIN_DIR", util::bin_dir());
    util::run(&mut cmd).with_context(|| format!("building the {driver} bundle"))?;
    Ok(())
}

/// One netloom driver installed as a managed plugin on a host: `netloom/<driver>:latest`.
pub struct ManagedPlugin<'h> {
    host: &'h Host,
    name: String,
    id: String,
}

impl<'h> ManagedPlugin<'h> {
    /// Builds the bundle in the host's dir and runs `docker plugin create netloom/<driver>`; the
    /// plugin's Engine API mount points at the host's dockerd socket. Not enabled yet.
    pub fn create(host: &'h Host, driver: &str) -> Result<ManagedPlugin<'h>> {
        let dir = host.dir().join(format!("bundle-{driver}"));
        build_bundle(driver, &dir)?;
        let name = format!("netloom/{driver}:latest");
        host.docker(&["plugin", "create", &name, &dir.display().to_string()])?;
        let id = host.docker(&["plugin", "inspect", "--format", "{{.Id}}", &name])?.trim().to_string();
        let plugin = ManagedPlugin { host, name, id };
        plugin.set(&[&format!("docker-socket.source={}", host.docker_socket().display())])?;
        Ok(plugin)
    }

    /// `netloom/<driver>:latest`, the driver's name for `docker network create -d`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Docker's id of the plugin (its directory under the data root, its socket directory).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `docker plugin set <name> <settings>` (KEY=value for env, mount.source=path).
    pub fn set(&self, settings: &[&str]) -> Result<()> {
        let mut args = vec!["plugin", "set", self.name.as_str()];
        args.extend_from_slice(settings);
        self.host.docker(&args).map(drop)
    }

    pub fn enable(&self) -> Result<()> {
        self.host.docker(&["plugin", "enable", &self.name]).map(drop)
    }

    /// `docker plugin disable [-f]`: Ok(stdout) or the error Docker gave.
    pub fn disable(&self, force: bool) -> Result<String> {
        let mut args = vec!["plugin", "disable"];
        if force {
            args.push("-f");
        }
        args.push(&self.name);
        self.host.docker(&args)
    }

    pub fn enabled(&self) -> Result<bool> {
        Ok(self.host.docker(&["plugin", "inspect", "--format", "{{.Enabled}}", &self.name])?.trim() == "true")
    }

    pub fn remove(&self) -> Result<()> {
        self.host.docker(&["plugin", "rm", &self.name]).map(drop)
    }

    /// What Docker keeps of the plugin under its data root (`plugins/<id>`), as seen from the
    /// test process.
    pub fn data_dir(&self) -> PathBuf {
        self.host.path_inside(&format!("/run/netloom/docker/plugins/{}", self.id))
    }

    /// The plugin's output, which dockerd logs with the plugin's id.
    pub fn log_lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.host.dockerd_log())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&self.id))
            .map(str::to_owned)
            .collect()
    }
}
