use anyhow::Result;

use crate::report::Report;
use crate::sections::Config;

pub fn run(_config: &Config, _report: &mut Report) -> Result<()> {
    anyhow::bail!("not written yet")
}
