//! The container image: a rootfs with busybox-static and its applet symlinks, packed as a
//! `docker save` archive for `docker load`. Built once and cached; no registry is ever involved.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::UNIX_EPOCH;

use anyhow::{anyhow, bail, Context, Result};

use crate::util::{self, cache_dir};

/// The image every host gets (`docker load`ed at its first dockerd start). Its stop signal is
/// SIGKILL; its PATH is /bin, where all the busybox applets are.
pub const IMAGE: &str = "netloom/busybox:latest";

fn busybox() -> PathBuf {
    std::env::var_os("NETLOOM_BUSYBOX").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/bin/busybox"))
}

/// The cached image archive for `docker load` (built on first use; keyed by the busybox binary's
/// size and mtime).
pub fn image_tarball() -> Result<PathBuf> {
    static CELL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    CELL.get_or_init(|| build().map_err(|e| format!("{e:#}"))).clone().map_err(|e| anyhow!(e))
}

fn build() -> Result<PathBuf> {
    let bb = busybox();
    let meta = fs::metadata(&bb).with_context(|| format!("{} missing: install busybox-static", bb.display()))?;
    let mtime = meta.modified()?.duration_since(UNIX_EPOCH)?.as_secs();
    let dir = cache_dir();
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let out = dir.join(format!("busybox-image-v1-{}-{mtime}.tar", meta.len()));
    if out.is_file() {
        return Ok(out);
    }

    let pid = std::process::id();
    let tmp = dir.join(format!(".rootfs-build-{pid}"));
    let _ = fs::remove_dir_all(&tmp);
    let root = tmp.join("root");
    for d in ["bin", "etc", "proc", "sys", "dev", "root", "tmp", "var/tmp", "run"] {
        fs::create_dir_all(root.join(d))?;
    }
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    fs::copy(&bb, root.join("bin/busybox"))?;
    let list = util::run(Command::new(&bb).arg("--list"))?;
    let applets: Vec<&str> = list.lines().map(str::trim).filter(|a| !a.is_empty() && *a != "busybox").collect();
    for needed in ["sh", "ip", "ping", "nc", "wget", "sleep", "cat", "ifconfig", "route", "hostname"] {
        if !applets.contains(&needed) {
            bail!("{} has no `{needed}` applet", bb.display());
        }
    }
    for a in applets {
        symlink("busybox", root.join("bin").join(a))?;
    }
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")?;
    fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;

    // The layer, then a `docker save`-format archive around it: manifest.json, the image config
    // (which `docker import` can't set: StopSignal), the layer.
    let image = tmp.join("image");
    fs::create_dir_all(&image)?;
    let layer = image.join("layer.tar");
    tar(&root, &layer, &["."])?;
    let sha = util::run(Command::new("sha256sum").arg(&layer))?;
    let diff_id = format!("sha256:{}", sha.split_whitespace().next().unwrap_or_default());
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Cmd": ["sh"],
            "Env": ["PATH=/bin"],
            // `sleep` as a container's pid 1 ignores SIGTERM, so every `docker stop`, dockerd
            // shutdown or restore would wait 10 s per container.
            "StopSignal": "SIGKILL",
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "netloom-tests: busybox-static rootfs"}],
    });
    fs::write(image.join("config.json"), serde_json::to_vec(&config)?)?;
    let manifest = serde_json::json!([{"Config": "config.json", "RepoTags": [IMAGE], "Layers": ["layer.tar"]}]);
    fs::write(image.join("manifest.json"), serde_json::to_vec(&manifest)?)?;

    let part = dir.join(format!(".busybox-image-{pid}.tar"));
    tar(&image, &part, &["manifest.json", "config.json", "layer.tar"])?;
    fs::rename(&part, &out)?; // atomic: concurrent builders just overwrite with the same bytes
    let _ = fs::remove_dir_all(&tmp);
    Ok(out)
}

fn tar(dir: &Path, out: &Path, members: &[&str]) -> Result<()> {
    util::run(
        Command::new("tar")
            .args(["--numeric-owner", "--owner=0", "--group=0", "--mtime=@0", "--sort=name", "-C"])
            .arg(dir)
            .arg("-cf")
            .arg(out)
            .args(members),
    )?;
    Ok(())
}
