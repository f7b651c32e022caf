//! netloom's integration-test harness: simulated hosts, each a set of namespaces with its own
//! real dockerd, wired to a shared underlay, on which the scenarios run netloom's plugins.
//!
//! ```text
//!   root netns (never touched)
//!   ├─ nlt-<pid>-<cluster>         underlay: bridge br0 10.250.0.254/24, u-<host> veth ends
//!   ├─ nlt-<pid>-<cluster>-<host>  host: eth0 10.250.0.N/24 (default via .254), docker0, ...
//!   │    └─ holder (pid 1 of the host's pid ns; private mount ns with tmpfs on /run and
//!   │       /etc/docker, fresh sysfs, own hostname)
//!   │         ├─ dockerd ── containerd ── shims ── containers
//!   │         └─ plugins, listening on /run/docker/plugins/<name>.sock
//!   └─ /tmp/netloom-test-<cluster>-<pid>/<host>/  logs, docker.sock, plugin state dirs
//! ```
//!
//! Typical use:
//! ```no_run
//! use netloom_tests::{scenario, DockerVersion, HostConfig};
//! scenario("demo", |c| {
//!     let h = c.add_host(HostConfig::new("h1", DockerVersion::V20))?;
//!     h.start_plugin("loom-null", &[])?;
//!     h.docker(&["network", "create", "-d", "loom-null", "nn"])?;
//!     Ok(())
//! });
//! ```
//!
//! Timings on the 2-core dev machine: namespaces + veth + holder 0.04 s per host; Docker 20.10
//! answers 0.3 s after start, Docker 26 1.3 s (1 s of it is its gRPC reconnect back-off to the
//! containerd it just launched); `docker load` of the image 0.1 s; teardown 0.02-0.05 s.
//!
//! Pitfalls for test writers:
//! - Run things on a host with `Host::exec`/`Host::sh`/`Host::spawn` (nsenter into the holder),
//!   never with `ip netns exec` (it remounts /sys, hiding the cgroup mounts dockerd needs) and
//!   never by `setns` in a test thread.
//! - The host's /run is a private tmpfs: /run/docker/plugins, /run/containerd, dockerd's exec
//!   root and data root (/run/netloom/docker) exist only inside the host. From the test process
//!   reach them through `Host::path_inside` (`/proc/<holder>/root/...`).
//! - The machine has no `ping`: use `busybox ping` on hosts (the image has all busybox applets
//!   in /bin).
//! - Driver names are socket file names: `start_plugin("loom-x")` serves
//!   /run/docker/plugins/loom-x.sock; dockerd looks it up lazily on first use and retries for
//!   about 15 s if it isn't there, so start plugins before they are needed.
//! - `--cluster-store`/`--cluster-advertise` exist in Docker 20.10 only; Docker 26 refuses to start
//!   with them. Put etcd in the underlay with `UnderlayEtcd::start`, listening on
//!   `Cluster::underlay_ip()` (10.250.0.254), reachable from every host.
//! - Containers of `IMAGE` stop on SIGKILL (its STOPSIGNAL), so dockerd restarts are fast; other
//!   images' containers that ignore SIGTERM cost 10 s each on stop/restart.
//! - dockerd runs with --log-level=debug unless `dockerd_args` sets a level; all logs are in the
//!   scenario dir and printed (tails) when a scenario fails; NETLOOM_KEEP_LOGS=1 keeps the dir.
//! - A LAN neighbour (`Cluster::add_neighbour`) is a node on the underlay without dockerd; attack
//!   scenarios count with `NftCounters` in the namespaces they made, never in the root one.
//! - busybox has no UDP client or server and its `wget -T` crashes (bound wget with `timeout`).
//!   For UDP use this crate's `netloom-probe` binary (`env!("CARGO_BIN_EXE_netloom-probe")` in a
//!   scenario), on a host or neighbour with `Host::exec`, in a container's network namespace with
//!   `Host::exec_in_container_netns`.
//! - Plugins reconcile against Docker: what the host's dockerd does not have is removed within
//!   `Plugin::reconcile_period()` (pass `FAST_RECONCILE` for 6 s instead of 35 s). Plugins get
//!   `--docker-host unix://<host dir>/docker.sock` (the host's own dockerd) unless the test passes
//!   one; so networks made straight over a plugin socket while the host's dockerd runs are removed
//!   as unknown to Docker: give those plugins `--docker-host none`. Scratch plugins get `none`.
//! - `Host::start_plugin_behind_proxy` puts a `PluginProxy` between dockerd and the driver, which
//!   can swallow requests (Docker forgets a network without the driver hearing of it).
//! - Container names on loom-overlay (Docker 23+): `HostConfig::dns_on_own_address` gives dockerd
//!   `--dns <the host's underlay address>`, where loom-overlay answers by default; `DnsUpstream`
//!   is the site's resolver (in the underlay) for `--dns-resolv-conf`; `DnsProbe` asks from a
//!   host or a container (`EMBEDDED_RESOLVER` is Docker's resolver in a container's namespace).
//!   busybox's nslookup exits 1 when it finds nothing.
//! - dockerd loads br_netfilter, after which bridged traffic in every namespace (the underlay's
//!   br0 too) passes that namespace's iptables: keep the underlay's firewall empty.
//!
//! Environment: NETLOOM_BIN_DIR (plugin binaries), NETLOOM_CACHE (Docker 26, image archive),
//! NETLOOM_DOCKERD_V20 / NETLOOM_DOCKERD_V26 (dockerd overrides), NETLOOM_DOCKER_CLI,
//! NETLOOM_KEEP_LOGS, NETLOOM_TEST_TMP (scenario dirs' parent, default /tmp).
//!
//! Everything is torn down when the `Cluster` drops, also on panic: killing each host's holder
//! kills every process of that host (the kernel empties the pid namespace), then the cgroups and
//! namespaces are removed. A sweep at the first `Cluster::new` of a process removes leftovers of
//! test processes that died (by recorded pid files and the `nlt-`/`netloom-` name prefixes).

mod baseline;
mod capture;
mod cleanup;
mod cluster;
mod counters;
mod crafted;
mod dns;
mod dockerd;
mod etcd;
mod host;
mod image;
mod managed;
mod netns;
mod node;
mod overlay;
mod plugin;
mod probe;
mod proc;
mod proxy;
mod scratch;
mod util;

pub use baseline::{embedded_store_keys, record_files, HostState};
pub use capture::{parse_pcap, Capture, Frame, OuterUdp, Seen, Watch};
pub use cleanup::{own_netns, RootNsSnapshot};
pub use cluster::{scenario, Cluster, UNDERLAY_NET, UNDERLAY_PREFIX_LEN};
pub use counters::{ping_replies, NftCounters};
pub use crafted::{InnerUdp, CRAFTED_SRC_MAC};
pub use dns::{Arrival, AskFrom, Burst, DnsProbe, DnsReply, DnsUpstream, Waited, EMBEDDED_RESOLVER};
pub use dockerd::{docker_cli, DockerVersion};
pub use etcd::{Etcd, UnderlayEtcd};
pub use host::UNDERLAY_V6_PREFIX_LEN;
pub use host::{Host, HostConfig, DOCKERD_TIMEOUT};
pub use image::{image_tarball, IMAGE};
pub use managed::{build_bundle, ManagedPlugin};
pub use overlay::{LocalOverlay, OverlayPlugins, OVERLAY_LOG};
pub use plugin::{Plugin, DOCKER_PLUGIN_DIR, FAST_RECONCILE};
pub use probe::{no_ping, ping};
pub use proc::NsProc;
pub use proxy::{Moment, PluginProxy, ProxiedRequest};
pub use scratch::{ScratchNetns, ScratchPlugin};
pub use util::require_root;
pub use util::{bin_dir, cache_dir, same_process_alive, wait_until};
