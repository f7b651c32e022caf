//! What drivers may leave on a host, as text to compare before and after: links, addresses,
//! routes, iptables and nftables rules, overlay namespaces, and a driver's store keys, with
//! counters and other volatile fields left out. "Nothing outlives what Docker has" is
//! `HostState::take(h)` before equal to after.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use crate::host::Host;
use crate::plugin::Plugin;

/// The host's kernel state that netloom's drivers touch, per command, one normalised line each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostState {
    sections: Vec<(String, Vec<String>)>,
}

const COMMANDS: &[&[&str]] = &[
    &["ip", "-o", "link"],
    &["ip", "-o", "addr"],
    &["ip", "route"],
    &["ip", "-6", "route"],
    &["iptables-save"],
    &["ip6tables-save"],
    &["nft", "list", "ruleset"],
    // loom-overlay's per-network namespaces.
    &["sh", "-c", "ls /run/netloom/loom-overlay/netns 2>/dev/null || true"],
];

impl HostState {
    pub fn take(h: &Host) -> Result<HostState> {
        let mut sections = Vec::new();
        for argv in COMMANDS {
            let text = h.exec(argv).with_context(|| format!("on {}: {}", h.name(), argv.join(" ")))?;
            sections.push((argv.join(" "), normalise(&text)));
        }
        Ok(HostState { sections })
    }

    /// Every line (of any section) that contains `needle`: what is left of a network, by its id,
    /// subnet or link name.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.sections.iter().flat_map(|(_, lines)| lines.iter().filter(|l| l.contains(needle)).cloned()).collect()
    }

    /// `None` when equal, else the lines only before and only after, per section.
    pub fn diff(&self, after: &HostState) -> Option<String> {
        let mut out = String::new();
        for ((name, before), (_, now)) in self.sections.iter().zip(&after.sections) {
            let gone: Vec<&String> = before.iter().filter(|l| !now.contains(l)).collect();
            let new: Vec<&String> = now.iter().filter(|l| !before.contains(l)).collect();
            if gone.is_empty() && new.is_empty() && before.len() == now.len() {
                continue;
            }
            let _ = writeln!(out, "## {name}");
            for l in gone {
                let _ = writeln!(out, "- {l}");
            }
            for l in new {
                let _ = writeln!(out, "+ {l}");
            }
            if before.len() != now.len() {
                let _ = writeln!(out, "  ({} lines before, {} after)", before.len(), now.len());
            }
        }
        (!out.is_empty()).then_some(out)
    }

    /// The whole state, one section after another.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for (name, lines) in &self.sections {
            let _ = writeln!(out, "## {name}");
            for l in lines {
                let _ = writeln!(out, "{l}");
            }
        }
        out
    }
}

/// One line per rule, link, route, set or map element...: without comments, packet counters
/// ("[12:345]" of iptables chain headers, nft's "counter packets 1 bytes 40") and the "tentative"
/// of a young IPv6 address.
fn normalise(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_elements = false;
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let line = line.split(" [").next().unwrap_or(line).replace(" tentative", "");
        let line = match line.find("counter packets") {
            Some(at) => {
                let rest = &line[at..];
                let after_bytes = rest.find(" bytes ").map(|b| &rest[b + 7..]).unwrap_or("");
                let tail = after_bytes.split_once(' ').map(|(_, t)| t).unwrap_or("");
                format!("{}counter {tail}", &line[..at]).trim_end().to_string()
            }
            None => line,
        };
        // nft prints a set's or map's elements several to a line, wrapped depending on what else
        // is in it: one line per element, so that one going does not change the others' lines.
        let body = match line.trim_start().strip_prefix("elements = {") {
            Some(body) => body.to_string(),
            None if in_elements => line.clone(),
            None => {
                out.push(line);
                continue;
            }
        };
        let body = body.trim();
        let (body, last) = match body.strip_suffix('}') {
            Some(b) => (b, true),
            None => (body, false),
        };
        out.extend(body.split(',').map(str::trim).filter(|e| !e.is_empty()).map(|e| format!("\telement {e}")));
        in_elements = !last;
    }
    out
}

/// The keys of a driver's embedded store (`<state dir>/store.redb`), read from a copy so that the
/// running driver keeps its lock; empty when the driver keeps no embedded store. Take it while
/// the driver is idle (a copy in the middle of a commit could miss that commit).
pub fn embedded_store_keys(plugin: &Plugin) -> Result<Vec<String>> {
    let file = plugin.state_dir().join("store.redb");
    if !file.exists() {
        return Ok(Vec::new());
    }
    let copy = plugin.state_dir().with_file_name(format!("{}-store-copy", plugin.name()));
    let _ = std::fs::remove_dir_all(&copy);
    std::fs::create_dir_all(&copy)?;
    std::fs::copy(&file, copy.join("store.redb")).with_context(|| format!("copying {}", file.display()))?;
    let keys = read_keys(&copy);
    let _ = std::fs::remove_dir_all(&copy);
    keys
}

fn read_keys(state_dir: &Path) -> Result<Vec<String>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let store = netloom_store::open(None, state_dir, netloom_store::DEFAULT_PREFIX).await?;
        let mut keys: Vec<String> = store.list("").await?.into_iter().map(|kv| kv.key).collect();
        keys.sort();
        anyhow::Ok(keys)
    })
}

/// The record files a driver keeps in its state directory (loom-null), relative to it, sorted.
pub fn record_files(plugin: &Plugin) -> Result<Vec<String>> {
    let root = plugin.state_dir();
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if let Ok(rel) = path.strip_prefix(root) {
                out.push(rel.display().to_string());
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::normalise;

    #[test]
    fn set_elements_one_per_line_however_nft_wraps_them() {
        let two = "\tmap m {\n\t\telements = { \"a\" : jump x,\n\t\t\t     \"b\" : jump y }\n\t}\n";
        let one = "\tmap m {\n\t\telements = { \"a\" : jump x }\n\t}\n";
        assert_eq!(normalise(two), ["\tmap m {", "\telement \"a\" : jump x", "\telement \"b\" : jump y", "\t}"]);
        assert_eq!(normalise(one), ["\tmap m {", "\telement \"a\" : jump x", "\t}"]);
    }

    #[test]
    fn counters_and_comments_are_left_out() {
        let text = "# Generated by iptables-save\n:FORWARD DROP [12:345]\n-A X -j DROP\n\
                    \t\tip saddr 10.0.0.0/8 counter packets 3 bytes 120 drop\n\
                    2: eth0    inet6 fe80::1/64 scope link tentative \\       valid_lft forever\n";
        assert_eq!(
            normalise(text),
            [
                ":FORWARD DROP",
                "-A X -j DROP",
                "\t\tip saddr 10.0.0.0/8 counter drop",
                "2: eth0    inet6 fe80::1/64 scope link \\       valid_lft forever",
            ]
        );
    }
}
