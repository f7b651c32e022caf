use std::process::ExitCode;

mod driver;
mod handlers;
mod options;
mod parent;
mod state;
mod status;

const ABOUT: &str = "Docker's macvlan network as a remote driver: every container gets a macvlan link with its \
                     own MAC address on a host interface's segment (-o parent=eth0, or eth0.50 for a VLAN).";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    netloom_driver_kit::serve(driver::DRIVER, ABOUT, "macvlan", driver::MacvlanDriver::start).await
}
