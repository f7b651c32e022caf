//! Teardown that keeps going past errors and reports them all at the end, so that one failing
//! step does not leave the rest of an object behind.

use std::fmt::Display;

use anyhow::{bail, Result};

/// Collects the errors of a teardown's steps: `Errors::new("removing endpoint 0123")`, then
/// `note` each step's result, then `finish`.
#[must_use = "finish() reports the collected errors"]
pub struct Errors {
    doing: String,
    errors: Vec<String>,
}

impl Errors {
    pub fn new(doing: impl Display) -> Self {
        Self { doing: doing.to_string(), errors: Vec::new() }
    }

    /// Keeps the step's error, if any; returns its value otherwise.
    pub fn note<T>(&mut self, result: Result<T>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(e) => {
                self.errors.push(format!("{e:#}"));
                None
            }
        }
    }

    /// Ok when every step succeeded, else one error naming the teardown and every failure.
    pub fn finish(self) -> Result<()> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            bail!("{}: {}", self.doing, self.errors.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_is_reported() {
        let mut errors = Errors::new("removing endpoint e1");
        assert_eq!(errors.note(anyhow::Ok(3)), Some(3));
        assert_eq!(errors.note::<()>(Err(anyhow::anyhow!("first"))), None);
        assert_eq!(errors.note::<()>(Err(anyhow::anyhow!("second"))), None);
        assert_eq!(errors.finish().unwrap_err().to_string(), "removing endpoint e1: first; second");
        Errors::new("nothing").finish().unwrap();
    }
}
