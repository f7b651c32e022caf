//! The systemd units in examples/systemd: one per binary, each ordered before docker.service,
//! restarted on failure and reading the shared and its own environment file, and each passing
//! `systemd-analyze verify` with no complaint (its ExecStart pointed at the binary this build made,
//! since the units name /usr/local/bin). The verifier is first shown to complain about a broken
//! unit, so a silent verifier cannot pass the check.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};
use netloom_tests::bin_dir;

const BINARIES: [&str; 6] = ["loom-null", "loom-host", "loom-bridge", "loom-macvlan", "loom-overlay", "loom-ipam"];

fn units_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/systemd")
}

/// What `systemd-analyze verify` says of `unit` (empty: nothing wrong).
fn verify(unit: &Path) -> Result<String> {
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(unit)
        .output()
        .context("running systemd-analyze (apt-get install systemd)")?;
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    ensure!(out.status.success() || !said.trim().is_empty(), "systemd-analyze failed silently: {}", out.status);
    Ok(said.trim().to_string())
}

#[test]
fn every_binary_has_a_unit_that_systemd_accepts() -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let bins = bin_dir().display().to_string();
    for binary in BINARIES {
        let path = units_dir().join(format!("{binary}.service"));
        let text = std::fs::read_to_string(&path).with_context(|| format!("no unit for {binary}"))?;
        for line in [
            "Before=docker.service".to_string(),
            "Restart=on-failure".into(),
            "EnvironmentFile=-/etc/netloom/netloom.env".into(),
            format!("EnvironmentFile=-/etc/netloom/{binary}.env"),
            format!("ExecStart=/usr/local/bin/{binary} $LOOM_ARGS"),
            "WantedBy=multi-user.target docker.service".into(),
        ] {
            ensure!(text.lines().any(|l| l == line), "{binary}.service lacks {line:?}");
        }
        let local = scratch.path().join(format!("{binary}.service"));
        std::fs::write(&local, text.replace("/usr/local/bin/", &format!("{bins}/")))?;
        if binary == BINARIES[0] {
            let broken = scratch.path().join("broken.service");
            std::fs::write(&broken, text.replace("Type=exec", "Type=sometimes"))?;
            let said = verify(&broken)?;
            ensure!(said.contains("Type") || said.contains("type"), "the verifier let a bad Type= pass: {said:?}");
        }
        let said = verify(&local)?;
        ensure!(said.is_empty(), "systemd-analyze verify {binary}.service: {said}");
        eprintln!("[systemd] {binary}.service verified");
    }
    Ok(())
}
