//! `loom-overlay --rotate-key`: a client of the running driver, which owns the tunnel and its key.

use std::path::Path;
use std::process::ExitCode;

use netloom_plugin_api::client::PluginClient;

use crate::handlers::ROTATE_KEY;

/// Asks the driver serving `socket` for a new key; prints its public key, or why not.
pub async fn ask_driver(socket: &Path) -> ExitCode {
    let mut client = match PluginClient::connect(socket).await {
        Ok(client) => client,
        Err(e) => {
            eprintln!("loom-overlay --rotate-key: is loom-overlay running? {e:#}");
            return ExitCode::FAILURE;
        }
    };
    match client.call(&format!("Netloom.{ROTATE_KEY}"), &serde_json::Value::Null).await {
        Ok(reply) => match reply.get("PublicKey").and_then(|k| k.as_str()) {
            Some(key) => {
                println!("{key}");
                ExitCode::SUCCESS
            }
            None => {
                eprintln!("loom-overlay --rotate-key: the driver answered without a public key: {reply}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("loom-overlay --rotate-key: {e:#}");
            ExitCode::FAILURE
        }
    }
}
