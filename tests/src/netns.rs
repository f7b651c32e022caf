//! Named network namespaces (`ip netns`), deleted on drop.

use std::process::Command;

use anyhow::Result;

use crate::util;

pub struct Netns {
    name: String,
}

impl Netns {
    /// `ip netns add <name>` and bring its loopback up.
    pub fn create(name: &str) -> Result<Netns> {
        util::run(Command::new("ip").args(["netns", "add", name]))?;
        let ns = Netns { name: name.to_owned() };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <ns> <args>`: runs in the namespace without entering it.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        util::run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// Deletes the namespace (idempotent). Its interfaces, including veth ends whose peers are
    /// elsewhere, go with it once no process is left in it.
    pub fn delete(&self) {
        let path = format!("/run/netns/{}", self.name);
        if std::path::Path::new(&path).exists() {
            if let Err(e) = util::run(Command::new("ip").args(["netns", "delete", &self.name])) {
                eprintln!("[netloom-tests] cleanup: {e:#}");
            }
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.delete();
    }
}
