use std::process::ExitCode;

mod driver;
mod handlers;
mod options;
mod plumbing;
mod policy;
mod state;
mod status;

const ABOUT: &str = "Host-routed container networking: a veth per container, a route per container address on \
                     the host, a link-local gateway; no bridge and no NAT unless asked for.";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    netloom_driver_kit::serve_with_firewall(driver::DRIVER, ABOUT, "host", policy::owns, driver::HostDriver::start)
        .await
}
