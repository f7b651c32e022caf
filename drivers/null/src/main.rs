use std::process::ExitCode;

use clap::Parser;
use netloom_plugin_api::{CommonArgs, Plugin};

mod driver;

/// Docker's `none` network as a remote driver: containers get only a loopback interface.
#[derive(Parser)]
#[command(name = "loom-null", version, about)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    netloom_plugin_api::run("loom-null", &args.common, |settings| async move {
        let driver = driver::NullDriver::open(&settings).await?;
        Ok(Plugin::network(driver))
    })
    .await
}
