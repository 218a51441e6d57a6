//! A browser-side Socket.IO client for the end-to-end tests: the official socket.io-client, run by node
//! (`gui/scripts/live-listen.mjs`, with `npm ci` run in `gui/`), whose printed events the test reads.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::Gateway;

/// The events a socket.io-client connection printed, one `{"event", "data"}` each; killed when dropped.
pub struct Listener {
    child: std::process::Child,
    events: Arc<Mutex<Vec<Value>>>,
}

impl Listener {
    /// Connects to `gateway` with the access `token` (over WSS, trusting the gateway's CA, when it serves TLS).
    pub fn start(gateway: &Gateway, token: &str) -> anyhow::Result<Self> {
        let gui = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../gui");
        let mut command = Command::new("node");
        command.current_dir(&gui).args(["scripts/live-listen.mjs", &gateway.base, token]).stdout(Stdio::piped());
        if let Some(ca) = &gateway.ca_file {
            command.env("NODE_EXTRA_CA_CERTS", ca);
        }
        let mut child =
            command.spawn().map_err(|e| anyhow::anyhow!("node (with `npm ci` run in gui/) is needed: {e}"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(event) = serde_json::from_str::<Value>(&line) {
                    sink.lock().unwrap_or_else(|p| p.into_inner()).push(event);
                }
            }
        });
        Ok(Self { child, events })
    }

    /// Every event received so far (`connected` once connected).
    pub fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
