//! `exec`: runs a command named in `[exec.commands]` (argv, no shell) with the payload's `stdin`; its
//! standard output is the result.

use std::collections::BTreeMap;
use std::process::Stdio;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::{JobFailure, JobHandler, ProgressSink, parse_payload, to_result};
use crate::config::ExecConfig;

/// Largest output kept.
const MAX_OUTPUT_BYTES: usize = 1024 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecPayload {
    command: String,
    #[serde(default)]
    stdin: Option<String>,
}

pub struct Exec {
    commands: BTreeMap<String, Vec<String>>,
}

impl Exec {
    pub fn new(config: &ExecConfig) -> Self {
        Self { commands: config.commands.clone() }
    }
}

#[async_trait]
impl JobHandler for Exec {
    async fn run(&self, payload: &RawValue, _progress: &ProgressSink) -> Result<Box<RawValue>, JobFailure> {
        let payload: ExecPayload = parse_payload("exec", payload)?;
        let argv = self.commands.get(&payload.command).ok_or_else(|| {
            JobFailure::permanent(format!("{:?} is not a command in this engine's [exec.commands]", payload.command))
        })?;
        let (program, args) = argv.split_first().ok_or_else(|| JobFailure::permanent("empty command"))?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A job that times out is dropped: the process must not outlive it.
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| JobFailure::permanent(format!("cannot start {program}: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            let input = payload.stdin.unwrap_or_default();
            // A command that does not read its input closes the pipe early; that is not an error.
            let _ = stdin.write_all(input.as_bytes()).await;
        }
        let output =
            child.wait_with_output().await.map_err(|e| JobFailure::retryable(format!("waiting for {program}: {e}")))?;
        if !output.status.success() {
            let stderr = super::text_prefix(&output.stderr, 2_000);
            return Err(JobFailure::retryable(format!("{program} exited with {}: {stderr}", output.status)));
        }
        if output.stdout.len() > MAX_OUTPUT_BYTES {
            return Err(JobFailure::permanent(format!("the output is larger than {MAX_OUTPUT_BYTES} bytes")));
        }
        to_result(&String::from_utf8_lossy(&output.stdout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec() -> Exec {
        let mut commands = BTreeMap::new();
        commands.insert("count".to_string(), vec!["/usr/bin/wc".to_string(), "-c".to_string()]);
        commands.insert(
            "fail".to_string(),
            vec!["/bin/sh".to_string(), "-c".to_string(), "echo no >&2; exit 3".to_string()],
        );
        Exec { commands }
    }

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_string()).unwrap()
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn runs_named_commands_only() {
        let out = exec().run(&raw(r#"{"command":"count","stdin":"hello"}"#), &ProgressSink::default()).await.unwrap();
        assert_eq!(serde_json::from_str::<String>(out.get()).unwrap().trim(), "5");
        let err = exec().run(&raw(r#"{"command":"rm"}"#), &ProgressSink::default()).await.unwrap_err();
        assert!(!err.retryable && err.message.contains("not a command"), "{err}");
        let err = exec().run(&raw(r#"{"command":"fail"}"#), &ProgressSink::default()).await.unwrap_err();
        assert!(err.message.contains("no"), "{err}");
        let err = exec().run(&raw(r#"{"cmd":"count"}"#), &ProgressSink::default()).await.unwrap_err();
        assert!(!err.retryable);
    }
}
