//! Self-test of the harness: two hosts in one cluster (one on Docker 20.10, one on Docker 26)
//! reach each other over the underlay, each host really is separate (hostname, sysfs, firewall),
//! and after teardown nothing is left: no process, namespace, cgroup or scenario dir, and the
//! root namespace is exactly as before.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use netloom_tests::{own_netns, same_process_alive, Cluster, DockerVersion, Host, HostConfig, RootNsSnapshot, IMAGE};

#[test]
fn two_hosts_ping_over_underlay_and_leave_no_trace() {
    let root_before = RootNsSnapshot::take().expect("snapshot of the root namespace");
    let mut procs = Vec::new();
    let cluster_dir;
    {
        let c = Cluster::new("harness").expect("cluster");
        cluster_dir = c.dir().to_path_buf();
        let res = (|| -> Result<()> {
            let hosts = c.add_hosts(vec![
                HostConfig::new("h1", DockerVersion::V20),
                HostConfig::new("h2", DockerVersion::V26),
            ])?;
            let (h1, h2) = (&hosts[0], &hosts[1]);

            // Underlay connectivity, both ways, from the hosts' namespaces.
            let ping = |h: &Host, ip: Ipv4Addr| h.sh(&format!("busybox ping -c 1 -W 5 {ip}"));
            ping(h1, h2.underlay_ip()).context("h1 -> h2")?;
            ping(h2, h1.underlay_ip()).context("h2 -> h1")?;
            ping(h1, c.underlay_ip()).context("h1 -> underlay")?;

            // Each host is its own machine: hostname, /sys/class/net, interfaces, firewall.
            ensure!(h1.exec(&["hostname"])?.trim() == "harness-h1", "hostname of h1");
            ensure!(h2.docker(&["info", "--format", "{{.Name}}"])?.trim() == "harness-h2", "dockerd's name on h2");
            let sys = h1.exec(&["ls", "/sys/class/net"])?;
            ensure!(sys.split_whitespace().any(|i| i == "eth0") && sys.contains("docker0"), "h1 sysfs: {sys}");
            ensure!(!sys.contains("ifb0"), "h1 sees the root namespace's sysfs: {sys}");
            for h in &hosts {
                let rules = h.exec(&["iptables-save"])?;
                ensure!(
                    rules.contains("-A DOCKER-USER"),
                    "dockerd did not program iptables in {}'s namespace:\n{rules}",
                    h.name()
                );
                ensure!(h.exec(&["ls", "/run/docker/plugins"])?.trim().is_empty(), "plugins dir not empty");
            }
            ensure!(
                !Path::new("/run/docker/plugins").exists()
                    || Path::new("/run/docker/plugins").read_dir()?.next().is_none()
            );

            // Containers run; one on the default bridge reaches the other host through NAT.
            let out = h1.docker(&["run", "--rm", "--network", "none", IMAGE, "ip", "-o", "link"])?;
            ensure!(out.lines().count() == 1 && out.contains(": lo:"), "--network none container: {out}");
            let cping = |h: &Host, ip: Ipv4Addr| {
                let args = format!("run --rm {IMAGE} ping -c 1 -W 5 {ip}");
                h.docker(&args.split_whitespace().collect::<Vec<_>>())
            };
            cping(h1, h2.underlay_ip()).context("container on h1 -> h2")?;
            cping(h2, h1.underlay_ip()).context("container on h2 -> h1")?;

            // A service in the underlay namespace (where etcd would go), reached from a container.
            std::fs::create_dir_all(c.dir().join("www"))?;
            std::fs::write(c.dir().join("www/hello"), "hello from the underlay\n")?;
            let www = c.dir().join("www").display().to_string();
            c.spawn_underlay("httpd", &["busybox", "httpd", "-f", "-p", "8080", "-h", &www])?;
            let url = format!("http://{}:8080/hello", c.underlay_ip());
            netloom_tests::wait_until(Duration::from_secs(10), Duration::from_millis(50), "httpd", || {
                Ok(c.underlay_exec(&["busybox", "wget", "-q", "-O", "-", &url]).is_ok())
            })?;
            let got = h2.docker(&["run", "--rm", IMAGE, "wget", "-q", "-O", "-", &url])?;
            ensure!(got == "hello from the underlay\n", "wget from a container on h2: {got:?}");

            // dockerd restarts keep the host's data root (the image stays).
            h1.restart_docker()?;
            ensure!(h1.docker(&["image", "ls", "-q", IMAGE])?.trim().len() == 12, "image gone after restart");

            h2.docker(&["run", "-d", "--name", "sleeper", IMAGE, "sleep", "600"])?;
            ensure!(h2.container_exec("sleeper", &["hostname"])?.trim().len() == 12);

            // Record every process the hosts run, to check they are all gone after teardown.
            for h in &hosts {
                let ps = h.processes();
                let names: Vec<&str> = ps.iter().map(|(_, _, c)| c.as_str()).collect();
                ensure!(names.iter().any(|c| c.contains("dockerd")), "no dockerd among {names:?}");
                ensure!(names.iter().any(|c| c.starts_with("containerd ")), "no containerd among {names:?}");
                procs.extend(ps);
            }
            ensure!(procs.iter().any(|(_, _, c)| c.contains("containerd-shim")), "no shim seen");
            ensure!(procs.iter().any(|(_, _, c)| c == "sleep 600"), "no container process seen");
            Ok(())
        })();
        if let Err(e) = res {
            c.mark_failed();
            drop(c);
            panic!("{e:#}");
        }
    }

    let alive: Vec<_> = procs.iter().filter(|(pid, start, _)| same_process_alive(*pid, *start)).collect();
    assert!(alive.is_empty(), "processes survived the teardown: {alive:?}");
    let ns: Vec<_> = own_netns().into_iter().filter(|n| n.contains("-harness")).collect();
    assert!(ns.is_empty(), "namespaces survived: {ns:?}");
    let prefix = format!("netloom-{}-harness-", std::process::id());
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        for e in std::fs::read_dir(hierarchy.path()).into_iter().flatten().flatten() {
            assert!(!e.file_name().to_string_lossy().starts_with(&prefix), "cgroup survived: {}", e.path().display());
        }
    }
    if std::env::var_os("NETLOOM_KEEP_LOGS").is_none() {
        assert!(!cluster_dir.exists(), "scenario dir survived: {}", cluster_dir.display());
    }
    root_before.check_unchanged().unwrap();
}
