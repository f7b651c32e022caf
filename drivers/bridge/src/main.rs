use std::process::ExitCode;

mod driver;
mod fastpath;
mod handlers;
mod options;
mod state;
mod status;

const ABOUT: &str = "Docker's bridge network as a remote driver: a Linux bridge per network, NAT, isolation and \
                     published ports in the kernel.";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    netloom_driver_kit::serve_with_firewall(driver::DRIVER, ABOUT, "bridge", driver::owns, driver::BridgeDriver::start)
        .await
}
