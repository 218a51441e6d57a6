//! `custom-engine`: `flowork-engine` with a kind of its own, `word_count`, beside the built-in ones.
//!
//! Run it like `flowork-engine` (same flags and environment):
//! `cargo run -p flowork-example-custom-engine -- --engine-id mine --token-file mine.token`.

use std::collections::BTreeMap;

use clap::Parser;
use flowork_engine::config::EngineArgs;
use flowork_engine::{Engine, JobFailure};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = EngineArgs::parse();
    let _telemetry = flowork_common::logging::init(args.log_format, "custom-engine");
    Engine::new(args)
        .handle("word_count", |payload: Value, progress| async move {
            let text = payload["text"].as_str().ok_or_else(|| JobFailure::permanent("`text` must be a string"))?;
            let mut counts = BTreeMap::new();
            for word in text.split_whitespace() {
                *counts.entry(word.to_lowercase()).or_insert(0u64) += 1;
            }
            progress.report(100.0, Some(format!("{} distinct words", counts.len())));
            Ok(json!({ "words": counts }))
        })
        .run()
        .await
}
