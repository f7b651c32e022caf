//! `loomctl doctor`: what the drivers need, checked, each failure with how to fix it.

use std::fmt;
use std::path::Path;
use std::process::ExitCode;

use netloom_plugin_api::engine::reconcile::{missing_allocations, missing_networks, HeldAllocation};
use netloom_plugin_api::engine::{Engine, HeldEndpoint, HeldNetwork};
use serde_json::Value;

use crate::gather::{self, Driver};
use crate::{kernel, DOCKER_LIMIT};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    /// Worth knowing; not wrong.
    Warn,
    Fail,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub level: Level,
    pub what: String,
    pub detail: String,
    pub fix: Option<String>,
}

impl Check {
    pub fn ok(what: impl Into<String>, detail: impl Into<String>) -> Check {
        Check { level: Level::Ok, what: what.into(), detail: detail.into(), fix: None }
    }

    pub fn warn(what: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check { level: Level::Warn, what: what.into(), detail: detail.into(), fix: Some(fix.into()) }
    }

    pub fn fail(what: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check { level: Level::Fail, what: what.into(), detail: detail.into(), fix: Some(fix.into()) }
    }

    pub fn passed(&self) -> bool {
        self.level != Level::Fail
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.level {
            Level::Ok => "ok  ",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        write!(f, "{tag}  {}: {}", self.what, self.detail)?;
        if let Some(fix) = &self.fix {
            write!(f, "\n      fix: {fix}")?;
        }
        Ok(())
    }
}

/// Prints every check; exits 1 when one failed.
pub async fn run(dir: &Path, engine: Option<&Engine>) -> ExitCode {
    let mut checks = kernel::checks();
    checks.push(docker(engine).await);
    let drivers = gather::drivers(dir, engine).await;
    checks.extend(judge(dir, &drivers));
    for check in &checks {
        println!("{check}");
    }
    let failed = checks.iter().filter(|c| !c.passed()).count();
    if failed == 0 {
        println!("all {} checks passed", checks.len());
        ExitCode::SUCCESS
    } else {
        println!("{failed} of {} checks failed", checks.len());
        ExitCode::FAILURE
    }
}

async fn docker(engine: Option<&Engine>) -> Check {
    let Some(engine) = engine else {
        return Check::warn(
            "dockerd",
            "not asked (--docker-host none)",
            "give --docker-host to check dockerd and leftovers",
        );
    };
    let what = format!("dockerd at {}", engine.docker_host());
    let fix = "start dockerd, or point --docker-host (NETLOOM_DOCKER_HOST) at it";
    match tokio::time::timeout(DOCKER_LIMIT, engine.api_version()).await {
        Ok(Ok(version)) => Check::ok(what, format!("answers (API {version})")),
        Ok(Err(e)) => Check::fail(what, e.to_string(), fix),
        Err(_) => Check::fail(what, format!("did not answer within {DOCKER_LIMIT:?}"), fix),
    }
}

/// The checks of what the drivers answered: each socket answers, each store answers, and nothing
/// is held that Docker no longer has.
pub fn judge(dir: &Path, drivers: &[Driver]) -> Vec<Check> {
    if drivers.is_empty() {
        return vec![Check::fail(
            "drivers",
            format!("no netloom driver socket (loom-*.sock) in {}", dir.display()),
            "start the drivers (systemctl start loom-bridge ...), or give --plugins-dir",
        )];
    }
    let mut checks = Vec::new();
    for driver in drivers {
        let status = match &driver.status {
            Ok(status) => status,
            Err(e) => {
                checks.push(Check::fail(
                    driver.name.clone(),
                    format!("does not answer: {e}"),
                    format!(
                        "start it (systemctl start {0}; journalctl -u {0} says why it stopped); a socket left by a \
                         driver that is gone can be removed",
                        driver.name
                    ),
                ));
                continue;
            }
        };
        checks
            .push(Check::ok(driver.name.clone(), format!("answers (version {}, pid {})", status.version, status.pid)));
        for store in &status.stores {
            let what = format!("{}: store {}", driver.name, store.url);
            if store.healthy {
                checks.push(Check::ok(what, "answers"));
            } else {
                let error = store.error.clone().unwrap_or_else(|| "does not answer".into());
                let fix = store_fix(&error);
                checks.push(Check::fail(what, error, fix));
            }
        }
        if let Some(error) = status.details.get("store_error").and_then(Value::as_str) {
            checks.push(Check::fail(format!("{}: shared store", driver.name), error.to_string(), store_fix(error)));
        }
        if let Some(check) = leftovers(driver) {
            checks.push(check);
        }
    }
    checks
}

fn store_fix(error: &str) -> String {
    let lower = error.to_lowercase();
    if lower.contains("tls") || lower.contains("certificate") {
        "check --store-ca, --store-cert and --store-key against the store's certificates (and the store's address \
         against its certificate's names)"
            .into()
    } else if lower.contains("authentication") || lower.contains("permission") {
        "check --store-user with --store-password-file, or --store-token-file".into()
    } else {
        "start the store, or check --store (NETLOOM_STORE) and that this host can reach it".into()
    }
}

/// What the driver holds and Docker no longer has: the reconciler removes it, unless the driver
/// runs without `--docker-host` or cannot reach dockerd.
fn leftovers(driver: &Driver) -> Option<Check> {
    let Some(Ok(docker)) = &driver.docker else { return None };
    let status = driver.status.as_ref().ok()?;
    let missing = if driver.is_ipam() {
        missing_allocations(&allocations(&status.details), docker)
    } else {
        let held: Vec<HeldNetwork> = status
            .networks
            .iter()
            .map(|n| HeldNetwork {
                id: n.id.clone(),
                global: n.global,
                endpoints: n.endpoint_ids.iter().map(|id| HeldEndpoint { id: id.clone() }).collect(),
            })
            .collect();
        missing_networks(&held, docker)
    };
    let what = format!("{}: leftovers", driver.name);
    if missing.is_empty() {
        return Some(Check::ok(what, "none: everything it holds, Docker has"));
    }
    let list: Vec<String> = missing.iter().map(ToString::to_string).collect();
    Some(Check::warn(
        what,
        format!("holds {} thing(s) Docker no longer has: {}", missing.len(), list.join(", ")),
        format!(
            "the driver's reconciler removes them within --reconcile-interval; if they stay, {} runs with \
             --docker-host none or cannot reach dockerd (see its log)",
            driver.name
        ),
    ))
}

/// loom-ipam's `allocations`: `[{"kind": "pool"|"address"|"gateway", "pool_id", "subnet", "address"}]`.
fn allocations(details: &Value) -> Vec<HeldAllocation> {
    let Some(Value::Array(list)) = details.get("allocations") else { return Vec::new() };
    list.iter()
        .filter_map(|a| {
            let text = |key: &str| a.get(key).and_then(Value::as_str);
            let pool_id = text("pool_id")?.to_string();
            let subnet = text("subnet")?.parse().ok()?;
            let address = || text("address").and_then(|s| s.parse().ok());
            match text("kind")? {
                "pool" => Some(HeldAllocation::Pool { pool_id, subnet }),
                "address" => Some(HeldAllocation::Address { pool_id, subnet, address: address()? }),
                "gateway" => Some(HeldAllocation::Gateway { pool_id, subnet, address: address()? }),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
#[path = "doctor_tests.rs"]
mod tests;
