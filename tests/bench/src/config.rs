//! The run-wide settings every section shares, and the facts printed above the table.

use crate::sections::Section;

/// Sizes of the run; `quick` is a smoke run of every section.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub quick: bool,
}

impl Config {
    /// `docker run -d` per driver in the attach section (interleaved A B A B).
    pub fn attach_rounds(&self) -> usize {
        if self.quick {
            6
        } else {
            40
        }
    }

    /// Existing endpoints (or published ports) at which the driver-side costs are measured.
    pub fn scale_levels(&self) -> Vec<usize> {
        if self.quick {
            vec![10, 100]
        } else {
            vec![10, 100, 500, 1000]
        }
    }

    /// Timed requests per operation and level (enough that one scheduling hiccup does not make
    /// the p99).
    pub fn samples(&self) -> usize {
        if self.quick {
            20
        } else {
            300
        }
    }

    /// iperf3 runs per path (median taken) and seconds per run.
    pub fn iperf_rounds(&self) -> usize {
        if self.quick {
            1
        } else {
            5
        }
    }

    pub fn iperf_seconds(&self) -> u32 {
        if self.quick {
            2
        } else {
            4
        }
    }

    /// `quick` in a quick run, else `full`.
    fn sized(&self, quick: usize, full: usize) -> usize {
        if self.quick {
            quick
        } else {
            full
        }
    }

    /// Lookups in the DNS section's timed burst.
    pub fn dns_queries(&self) -> usize {
        self.sized(50, 200)
    }

    /// Containers started (and removed) on one host while the other asks for their names.
    pub fn dns_rounds(&self) -> usize {
        self.sized(3, 5)
    }

    /// Endpoints for the "RSS with many endpoints" and reconcile figures.
    pub fn footprint_endpoints(&self) -> usize {
        if self.quick {
            100
        } else {
            1000
        }
    }
}

/// Facts about the run printed above the table.
pub fn machine_facts(config: &Config, sections: &[Section]) -> Vec<String> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default().trim().to_string();
    let kernel = read("/proc/sys/kernel/osrelease");
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let cpu_model = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("")
        .trim()
        .to_string();
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(netloom_tests::bin_dir())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    // A run of edited sources must not pass for a run of the commit.
    let edited = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|changes| !changes.is_empty());
    let version = if edited { format!("{commit} with uncommitted changes") } else { commit };
    vec![
        format!("netloom {version}, {} run of {}", if config.quick { "quick" } else { "full-size" }, sections_run(sections)),
        format!("kernel {kernel}, {cpus} CPU(s) {cpu_model}"),
        "anchors: Docker's built-in drivers on the same dockerd (Docker 20.10 from Debian; 26 from Debian trixie where a row says so), a bare veth pair, the bare underlay or a bare VXLAN tunnel, or a fixed budget".into(),
    ]
}

/// "every section", or the ones chosen with `--only`.
fn sections_run(sections: &[Section]) -> String {
    if Section::ALL.iter().all(|s| sections.contains(s)) {
        return "every section".into();
    }
    let names: Vec<String> = sections.iter().map(|s| format!("{s:?}").to_lowercase()).collect();
    format!("sections {}", names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_names_the_sections_run() {
        assert_eq!(sections_run(&Section::ALL), "every section");
        assert_eq!(sections_run(&[Section::Driver, Section::Throughput]), "sections driver, throughput");
    }
}
