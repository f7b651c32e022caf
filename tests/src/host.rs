//! A simulated host: its own network namespace (eth0 on the cluster's underlay), mount, UTS and
//! pid namespace, its own dockerd, and the netloom plugins it runs.

use std::fs;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cleanup::{self, CGROUP_PREFIX};
use crate::dockerd::{docker_cli, DockerVersion};
use crate::image::image_tarball;
use crate::netns::Netns;
use crate::node::Node;
use crate::plugin::{Plugin, DOCKER_PLUGIN_DIR};
use crate::proc::NsProc;
use crate::proxy::PluginProxy;
use crate::util::{self, tail, timed, CMD_TIMEOUT};

/// Where a plugin behind a `PluginProxy` serves its real socket on a host.
const PROXIED_PLUGIN_DIR: &str = "/run/netloom/plugins";

/// How long dockerd gets to answer on its socket.
pub const DOCKERD_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `stop_docker` waits after SIGTERM before SIGKILL.
pub const DOCKERD_STOP_GRACE: Duration = Duration::from_secs(30);

/// The underlay's IPv6 prefix (on br0 and the hosts' eth0 after `Cluster::enable_underlay_ipv6`):
/// host N gets `fd00:250::N`, the underlay bridge `fd00:250::254`.
pub const UNDERLAY_V6_PREFIX_LEN: u8 = 64;

pub(crate) fn underlay_ipv6(last_octet: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x250, 0, 0, 0, 0, 0, u16::from(last_octet))
}

/// What `Cluster::add_host` builds.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Short host name: [a-z0-9], at most 8 chars (it ends up in interface names).
    pub name: String,
    pub docker: DockerVersion,
    /// Extra dockerd arguments, e.g. `--cluster-store=etcd://10.250.0.254:2379`.
    pub dockerd_args: Vec<String>,
    /// Start dockerd in `add_host` (default). Set false to start plugins first, then call
    /// `Host::start_docker`.
    pub start_docker: bool,
    /// dockerd gets `--dns <this host's underlay address>` (where loom-overlay answers DNS by
    /// default); the address is known only once the host is added.
    pub dns_on_own_address: bool,
}

impl HostConfig {
    pub fn new(name: &str, docker: DockerVersion) -> HostConfig {
        HostConfig {
            name: name.to_owned(),
            docker,
            dockerd_args: Vec::new(),
            start_docker: true,
            dns_on_own_address: false,
        }
    }

    pub fn dockerd_args<S: AsRef<str>>(mut self, args: &[S]) -> HostConfig {
        self.dockerd_args.extend(args.iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Containers' names not known to Docker are asked of this host's own underlay address.
    pub fn dns_on_own_address(mut self) -> HostConfig {
        self.dns_on_own_address = true;
        self
    }

    /// Don't start dockerd in `add_host`.
    pub fn defer_docker(mut self) -> HostConfig {
        self.start_docker = false;
        self
    }
}

pub struct Host {
    cfg: HostConfig,
    dir: PathBuf,
    ip: Ipv4Addr,
    prefix_len: u8,
    cgroup: String,
    dockerd: Mutex<Option<NsProc>>,
    image_loaded: AtomicBool,
    plugins: Mutex<Vec<Arc<Plugin>>>,
    torn_down: AtomicBool,
    // Dropped in this order (after teardown has already run): processes, then the netns.
    node: Arc<Node>,
    netns: Netns,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Host {
    /// Builds the namespaces and the veth to the underlay, starts the holder, then dockerd if
    /// `cfg.start_docker`. On error everything made so far is removed (RAII fields).
    pub(crate) fn create(
        cfg: HostConfig,
        cluster: &str,
        cluster_dir: &Path,
        underlay: &Netns,
        ip: Ipv4Addr,
        prefix_len: u8,
        gateway: Ipv4Addr,
    ) -> Result<Host> {
        util::check_name("host", &cfg.name, 8)?;
        cfg.docker.dockerd()?; // a missing engine fails before anything is built
        let t0 = Instant::now();
        let pid = std::process::id();
        let name = cfg.name.clone();
        let dir = cluster_dir.join(&name);
        fs::create_dir_all(&dir)?;
        fs::write(dir.join("daemon.json"), "{}\n")?;

        let netns = Netns::create(&format!("{}{pid}-{cluster}-{name}", cleanup::NETNS_PREFIX))?;
        // The veth is created in the underlay namespace with its peer put straight into the host's:
        // no end of it ever exists in the root namespace.
        let uplink = format!("u-{name}");
        underlay.ip(&["link", "add", &uplink, "type", "veth", "peer", "name", "eth0", "netns", netns.name()])?;
        underlay.ip(&["link", "set", &uplink, "master", "br0", "up"])?;
        netns.ip(&["addr", "add", &format!("{ip}/{prefix_len}"), "dev", "eth0"])?;
        netns.ip(&["link", "set", "eth0", "up"])?;
        netns.ip(&["route", "add", "default", "via", &gateway.to_string()])?;

        let node = Arc::new(Node::start(netns.name(), &format!("{cluster}-{name}"), &dir)?);
        let host = Host {
            cgroup: format!("{CGROUP_PREFIX}{pid}-{cluster}-{name}"),
            cfg,
            dir,
            ip,
            prefix_len,
            dockerd: Mutex::new(None),
            image_loaded: AtomicBool::new(false),
            plugins: Mutex::new(Vec::new()),
            torn_down: AtomicBool::new(false),
            node,
            netns,
        };
        let t_ns = t0.elapsed();
        if host.cfg.start_docker {
            host.start_docker()?;
        }
        eprintln!(
            "[netloom-tests] {cluster}/{name}: namespaces+veth {:.2}s, total {:.2}s",
            t_ns.as_secs_f64(),
            t0.elapsed().as_secs_f64()
        );
        Ok(host)
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// The host's hostname (`<cluster>-<host>`); dockerd uses it as its node name.
    pub fn hostname(&self) -> &str {
        self.node.hostname()
    }

    pub fn docker_version(&self) -> DockerVersion {
        self.cfg.docker
    }

    /// The host's address on the underlay (on `eth0`).
    pub fn underlay_ip(&self) -> Ipv4Addr {
        self.ip
    }

    pub fn underlay_prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The host's IPv6 address on the underlay, `fd00:250::<last IPv4 octet>`; it is on `eth0`
    /// only after `Cluster::enable_underlay_ipv6`.
    pub fn underlay_ipv6(&self) -> Ipv6Addr {
        underlay_ipv6(self.ip.octets()[3])
    }

    /// Puts `underlay_ipv6()` on eth0 (see `Cluster::enable_underlay_ipv6`).
    pub fn add_underlay_ipv6(&self) -> Result<()> {
        let addr = format!("{}/{}", self.underlay_ipv6(), UNDERLAY_V6_PREFIX_LEN);
        self.netns.ip(&["-6", "addr", "add", &addr, "dev", "eth0", "nodad"])?;
        Ok(())
    }

    /// The host's underlay interface name.
    pub fn underlay_iface(&self) -> &'static str {
        "eth0"
    }

    /// The host's network namespace (`/run/netns/<name>`).
    pub fn netns(&self) -> &str {
        self.netns.name()
    }

    /// This host's directory in the scenario dir: logs, docker.sock, plugin state dirs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Pid (root pid namespace) of the holder process, pid 1 of the host's pid namespace.
    pub fn holder_pid(&self) -> i32 {
        self.node.holder_pid()
    }

    /// dockerd's API socket (in the scenario dir, so the CLI runs from the test process).
    pub fn docker_socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    pub fn dockerd_log(&self) -> PathBuf {
        self.dir.join("dockerd.log")
    }

    /// Every process of the host (dockerd, containerd, shims, containers, plugins, ...), as
    /// (pid in the root pid namespace, start time, command line).
    pub fn processes(&self) -> Vec<(i32, u64, String)> {
        self.node.processes()
    }

    /// A path inside the host's mount namespace, reachable from the test process.
    pub fn path_inside(&self, path: &str) -> PathBuf {
        self.node.path_inside(path)
    }

    // ---- dockerd -------------------------------------------------------------------------

    fn dockerd_argv(&self, bin: &Path) -> Vec<String> {
        let mut argv: Vec<String> = vec![bin.display().to_string()];
        argv.push(format!("--config-file={}", self.dir.join("daemon.json").display()));
        // Data root and exec root live on the host's private tmpfs (/run): fast, and gone with the
        // host's mount namespace. The exec root is Docker's default one, /var/run/docker.
        argv.push("--data-root=/run/netloom/docker".into());
        argv.push("--exec-root=/run/docker".into());
        argv.push("--pidfile=/run/netloom/dockerd.pid".into());
        argv.push(format!("--host=unix://{}", self.docker_socket().display()));
        // Containers' cgroups go under one per-host parent, removed at teardown.
        argv.push(format!("--cgroup-parent=/{}", self.cgroup));
        if !self
            .cfg
            .dockerd_args
            .iter()
            .any(|a| a.starts_with("--log-level") || a == "-l" || a == "--debug" || a == "-D")
        {
            argv.push("--log-level=debug".into());
        }
        // A fetched engine brings its own docker-proxy and docker-init; point at them explicitly.
        let given = |flag: &str| self.cfg.dockerd_args.iter().any(|a| a.starts_with(flag));
        if let (DockerVersion::V26, Some(dir)) = (self.cfg.docker, bin.parent()) {
            let root = DockerVersion::v26_dir();
            for (flag, cands) in [
                ("--userland-proxy-path", [dir.join("docker-proxy"), root.join("usr/sbin/docker-proxy")]),
                ("--init-path", [dir.join("docker-init"), root.join("usr/bin/docker-init")]),
            ] {
                if let Some(p) = cands.iter().find(|p| p.is_file()).filter(|_| !given(flag)) {
                    argv.push(format!("{flag}={}", p.display()));
                }
            }
        }
        if self.cfg.dns_on_own_address {
            argv.push(format!("--dns={}", self.ip));
        }
        argv.extend(self.cfg.dockerd_args.iter().cloned());
        argv
    }

    /// Starts dockerd (if not running), waits until it answers, and loads the busybox image on
    /// the first start.
    pub fn start_docker(&self) -> Result<()> {
        let mut g = lock(&self.dockerd);
        if g.as_mut().is_some_and(|p| p.is_running()) {
            return Ok(());
        }
        let bin = self.cfg.docker.dockerd()?;
        let t0 = Instant::now();
        let argv = self.dockerd_argv(&bin);
        let env = [("PATH", self.cfg.docker.path_env(&bin))];
        let mut proc = self.node.spawn("dockerd", &argv, &env, &self.dockerd_log())?;
        let sock = self.docker_socket();
        let res = util::wait_until(DOCKERD_TIMEOUT, Duration::from_millis(50), "dockerd to answer", || {
            if !proc.is_running() {
                bail!("dockerd exited ({:?})", proc.try_exit());
            }
            Ok(sock.exists() && self.docker(&["version", "--format", "{{.Server.Version}}"]).is_ok())
        });
        if let Err(e) = res {
            let _ = proc.kill();
            bail!(
                "{} on host {} did not come up: {e:#}\ndockerd.log (last 40 lines):\n{}",
                self.cfg.docker,
                self.name(),
                tail(&self.dockerd_log(), 40)
            );
        }
        *g = Some(proc);
        drop(g);
        let t_up = t0.elapsed();
        if !self.image_loaded.load(Ordering::SeqCst) {
            let t1 = Instant::now();
            let tar = image_tarball()?;
            self.docker(&["load", "-q", "-i", &tar.display().to_string()]).context("loading the busybox image")?;
            self.image_loaded.store(true, Ordering::SeqCst);
            eprintln!(
                "[netloom-tests] {}: {} ready in {:.2}s, image load {:.2}s",
                self.hostname(),
                self.cfg.docker,
                t_up.as_secs_f64(),
                t1.elapsed().as_secs_f64()
            );
        } else {
            eprintln!("[netloom-tests] {}: {} ready in {:.2}s", self.hostname(), self.cfg.docker, t_up.as_secs_f64());
        }
        Ok(())
    }

    /// SIGTERM dockerd and wait for it to exit (SIGKILL after 30 s). dockerd stops the running
    /// containers on the way out (at once for the netloom image, whose stop signal is SIGKILL;
    /// other containers that ignore SIGTERM cost their stop timeout, 10 s by default) and its
    /// managed containerd exits with it.
    pub fn stop_docker(&self) -> Result<()> {
        if let Some(mut p) = lock(&self.dockerd).take() {
            p.stop(DOCKERD_STOP_GRACE)?;
        }
        Ok(())
    }

    /// SIGKILL dockerd, like a crash. Its managed containerd dies with it, the shims and the
    /// containers keep running; the next `start_docker` cleans them up (containers without a
    /// restart policy are stopped, and their endpoints released through the plugins).
    pub fn kill_docker(&self) -> Result<()> {
        if let Some(mut p) = lock(&self.dockerd).take() {
            p.kill()?;
        }
        Ok(())
    }

    pub fn restart_docker(&self) -> Result<()> {
        self.stop_docker()?;
        self.start_docker()
    }

    pub fn docker_running(&self) -> bool {
        lock(&self.dockerd).as_mut().is_some_and(|p| p.is_running())
    }

    /// A docker CLI command for this host's dockerd (bounded by `limit`), for custom handling.
    pub fn docker_command<S: AsRef<str>>(&self, limit: Duration, args: &[S]) -> Command {
        let mut argv = vec![docker_cli()];
        argv.extend(args.iter().map(|a| a.as_ref().to_owned()));
        let mut cmd = timed(limit, &argv);
        cmd.env("DOCKER_HOST", format!("unix://{}", self.docker_socket().display()))
            .env("DOCKER_CONFIG", self.dir.join("docker-cli"))
            .env("DOCKER_CLI_HINTS", "false")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH")
            .env_remove("DOCKER_API_VERSION");
        cmd
    }

    /// Runs `docker <args>` against this host's dockerd: Ok(stdout), or an error with stderr.
    pub fn docker<S: AsRef<str>>(&self, args: &[S]) -> Result<String> {
        util::run(&mut self.docker_command(CMD_TIMEOUT, args))
    }

    /// `docker network create -d <driver> <args> <name>`: Ok(stdout), or an error with stderr.
    pub fn network_create(&self, driver: &str, name: &str, args: &[&str]) -> Result<String> {
        let mut argv = vec!["network", "create", "-d", driver];
        argv.extend_from_slice(args);
        argv.push(name);
        self.docker(&argv)
    }

    /// Like `docker`, but panics (with stderr) on failure; returns trimmed stdout.
    #[track_caller]
    pub fn docker_ok<S: AsRef<str>>(&self, args: &[S]) -> String {
        match self.docker(args) {
            Ok(out) => out.trim().to_owned(),
            Err(e) => panic!("on host {}: {e:#}", self.name()),
        }
    }

    /// `docker <args>` whose stdout is JSON (e.g. `inspect`).
    pub fn docker_json<S: AsRef<str>>(&self, args: &[S]) -> Result<serde_json::Value> {
        let out = self.docker(args)?;
        serde_json::from_str(&out).with_context(|| format!("docker output is not JSON: {out}"))
    }

    /// `docker exec <container> <argv>`.
    pub fn container_exec<S: AsRef<str>>(&self, container: &str, argv: &[S]) -> Result<String> {
        let mut args = vec!["exec".to_owned(), container.to_owned()];
        args.extend(argv.iter().map(|a| a.as_ref().to_owned()));
        self.docker(&args)
    }

    /// `field` of a container's settings on `network` (`IPAddress`, `GlobalIPv6Address`,
    /// `MacAddress`, ...), trimmed: empty if the container has none.
    pub fn container_network_field(&self, container: &str, network: &str, field: &str) -> Result<String> {
        let format = format!("{{{{(index .NetworkSettings.Networks \"{network}\").{field}}}}}");
        Ok(self.docker(&["inspect", "--format", &format, container])?.trim().to_string())
    }

    /// A container's IPv4 address on `network`; an error if it has none.
    pub fn container_ip(&self, container: &str, network: &str) -> Result<String> {
        let ip = self.container_network_field(container, network, "IPAddress")?;
        anyhow::ensure!(!ip.is_empty(), "container {container} has no address on {network}");
        Ok(ip)
    }

    /// The pid of a running container's first process, as the host's pid namespace sees it.
    pub fn container_pid(&self, container: &str) -> Result<i32> {
        let out = self.docker(&["inspect", "--format", "{{.State.Pid}}", container])?;
        let pid: i32 = out.trim().parse().with_context(|| format!("{container}'s pid: {out:?}"))?;
        if pid <= 0 {
            bail!("container {container} is not running");
        }
        Ok(pid)
    }

    /// Runs `argv` (a program of the machine, not of the image) in the network namespace of
    /// `container`, as root of the host: for tools the image lacks. Ok(stdout) on exit 0.
    pub fn exec_in_container_netns<S: AsRef<str>>(&self, container: &str, argv: &[S]) -> Result<String> {
        let pid = self.container_pid(container)?.to_string();
        let mut full = vec!["nsenter".to_owned(), "-t".to_owned(), pid, "-n".to_owned(), "--".to_owned()];
        full.extend(argv.iter().map(|a| a.as_ref().to_owned()));
        self.exec(&full)
    }

    // ---- commands and plugins on the host ----------------------------------------------------

    /// Runs `argv` in the host's namespaces (network, mount, UTS, pid): Ok(stdout) on exit 0.
    pub fn exec<S: AsRef<str>>(&self, argv: &[S]) -> Result<String> {
        self.node.exec(argv)
    }

    /// `sh -c <script>` on the host.
    pub fn sh(&self, script: &str) -> Result<String> {
        self.node.exec(&["sh", "-c", script])
    }

    /// Starts a long-lived process on the host (killed at teardown), logging to `<dir>/<name>.log`.
    pub fn spawn<S: AsRef<str>>(&self, name: &str, argv: &[S]) -> Result<NsProc> {
        self.node.spawn(name, argv, &[], &self.dir.join(format!("{name}.log")))
    }

    /// Starts the plugin binary `binary` (from NETLOOM_BIN_DIR, default `<workspace>/target/release`)
    /// with its socket at `/run/docker/plugins/<binary>.sock`, and waits for the socket.
    pub fn start_plugin(&self, binary: &str, extra_args: &[&str]) -> Result<Arc<Plugin>> {
        self.start_plugin_as(binary, binary, extra_args)
    }

    /// Like `start_plugin`, with the socket (driver) name `name` instead of the binary's name.
    pub fn start_plugin_as(&self, binary: &str, name: &str, extra_args: &[&str]) -> Result<Arc<Plugin>> {
        self.start_plugin_in(DOCKER_PLUGIN_DIR, binary, name, extra_args)
    }

    /// Starts `binary` serving `/run/netloom/plugins/<binary>.sock` (same file name: the driver's
    /// name is the socket's), and a `PluginProxy` on dockerd's `/run/docker/plugins/<binary>.sock`
    /// forwarding to it, so the test decides which of dockerd's requests the driver hears of.
    pub fn start_plugin_behind_proxy(&self, binary: &str, extra_args: &[&str]) -> Result<(Arc<Plugin>, PluginProxy)> {
        fs::create_dir_all(self.path_inside(PROXIED_PLUGIN_DIR))?;
        let plugin = self.start_plugin_in(PROXIED_PLUGIN_DIR, binary, binary, extra_args)?;
        let listen = self.path_inside(&format!("{DOCKER_PLUGIN_DIR}/{binary}.sock"));
        let proxy = PluginProxy::start(&listen, &self.path_inside(&plugin.socket()))?;
        Ok((plugin, proxy))
    }

    fn start_plugin_in(&self, socket_dir: &str, binary: &str, name: &str, extra_args: &[&str]) -> Result<Arc<Plugin>> {
        if lock(&self.plugins).iter().any(|p| p.name() == name) {
            bail!("host {} already has a plugin named {name}", self.name());
        }
        let t0 = Instant::now();
        let binary = util::bin_dir().join(binary);
        let plugin = Arc::new(Plugin::new(name, binary, extra_args, socket_dir, &self.dir, self.node.clone())?);
        lock(&self.plugins).push(plugin.clone());
        plugin.start()?;
        eprintln!(
            "[netloom-tests] {}: plugin {name} listening after {:.2}s",
            self.hostname(),
            t0.elapsed().as_secs_f64()
        );
        Ok(plugin)
    }

    pub fn plugins(&self) -> Vec<Arc<Plugin>> {
        lock(&self.plugins).clone()
    }

    /// Stops the plugin named `name` (SIGTERM, as an upgrade or a config change would) and starts
    /// the same binary again, on the same socket and state directory, with `args` instead of
    /// its earlier arguments (which `Plugin::args` gives, to change one flag of).
    pub fn restart_plugin_with(&self, name: &str, args: &[String]) -> Result<Arc<Plugin>> {
        let old = {
            let mut plugins = lock(&self.plugins);
            let at = plugins.iter().position(|p| p.name() == name);
            plugins.remove(at.with_context(|| format!("host {} has no plugin named {name}", self.name()))?)
        };
        old.sigterm().with_context(|| format!("stopping {name} before its restart"))?;
        let binary = old.binary().file_name().and_then(|b| b.to_str()).context("plugin binary name")?.to_string();
        let socket_dir = old.socket().rsplit_once('/').map(|(dir, _)| dir.to_string()).context("plugin socket dir")?;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.start_plugin_in(&socket_dir, &binary, name, &args)
    }

    /// An error naming each of the host's plugins that has exited (a crash the scenario would
    /// otherwise not notice).
    pub fn plugins_still_running(&self) -> Result<()> {
        let exited: Vec<String> = self
            .plugins()
            .iter()
            .filter(|p| !p.is_running())
            .map(|p| format!("{} ({:?})", p.name(), p.exit_status()))
            .collect();
        anyhow::ensure!(exited.is_empty(), "on {}, exited: {}", self.name(), exited.join(", "));
        Ok(())
    }

    // ---- diagnostics and teardown -----------------------------------------------------------

    /// The tails of this host's logs (dockerd, plugins, holder, other spawned processes).
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        let mut logs: Vec<PathBuf> = vec![self.dockerd_log()];
        logs.extend(self.plugins().iter().map(|p| p.log_path().to_path_buf()));
        if let Ok(rd) = fs::read_dir(&self.dir) {
            let mut rest: Vec<PathBuf> = rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "log") && !logs.contains(p))
                .collect();
            rest.sort();
            logs.extend(rest);
        }
        for log in logs {
            if fs::metadata(&log).map(|m| m.len() > 0).unwrap_or(false) {
                out.push_str(&format!("===== {} (last {lines} lines) =====\n{}\n", log.display(), tail(&log, lines)));
            }
        }
        out
    }

    /// Removes everything the host made (idempotent): kills the holder, which takes every process
    /// of the host along (dockerd, containerd, shims, containers, plugins), reaps our nsenter
    /// children, removes the containers' cgroups, deletes the network namespace (and so the veth).
    pub fn teardown(&self) {
        if self.torn_down.swap(true, Ordering::SeqCst) {
            return;
        }
        self.node.kill();
        if let Some(mut p) = lock(&self.dockerd).take() {
            let _ = p.kill();
        }
        for p in lock(&self.plugins).iter() {
            p.kill();
        }
        cleanup::remove_cgroup(&self.cgroup);
        self.netns.delete();
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.teardown();
    }
}
