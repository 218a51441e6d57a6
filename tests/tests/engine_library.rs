//! `flowork-engine` as a library: the example engine (`examples/custom-engine`) runs its own kind beside the
//! built-in ones, against a real gateway, as a user would start it.

use std::time::Duration;

use flowork_tests::{Api, Engine, Gateway, Workspace, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Waits for a job to be final and returns it.
async fn final_job(api: &Api, id: &str) -> anyhow::Result<Value> {
    eventually(Duration::from_secs(60), "the job to finish", || async {
        let job = api.get(&format!("/jobs/{id}")).await?.body;
        Ok(["succeeded", "dead", "failed", "cancelled"]
            .contains(&job["status"].as_str().unwrap_or_default())
            .then_some(job))
    })
    .await
}

#[tokio::test]
async fn an_engine_built_on_the_library_runs_its_own_kind_and_the_built_in_ones() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    ws.add_engine("mine")?;
    let gw = Gateway::start(&ws, &[]).await?;
    let _engine = Engine::start_binary("custom-engine", &ws, &gw, "mine", 2, &[], &[])?;
    let api = Api::new(&gw, &ws.mint("alice", "1h")?);

    let counted = json!({"engine": "mine", "kind": "word_count", "payload": {"text": "the cat saw The dog"}});
    let posted = api.post_job("count", &counted).await?;
    assert_eq!(posted.status, StatusCode::CREATED, "{}", posted.body);
    let job = final_job(&api, posted.body["id"].as_str().unwrap_or_default()).await?;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["result"], json!({"words": {"the": 2, "cat": 1, "saw": 1, "dog": 1}}));

    // The handler's permanent failure is final at once, with its message.
    let bad = json!({"engine": "mine", "kind": "word_count", "payload": {"text": 7}, "max_attempts": 5});
    let posted = api.post_job("bad", &bad).await?;
    let job = final_job(&api, posted.body["id"].as_str().unwrap_or_default()).await?;
    assert_eq!((job["status"].as_str(), job["attempts"].as_u64()), (Some("dead"), Some(1)), "{job}");
    assert!(job["error"].as_str().unwrap_or_default().contains("`text` must be a string"), "{job}");

    // The built-in kinds are still there.
    let echo = json!({"engine": "mine", "kind": "echo", "payload": {"x": 1}});
    let posted = api.post_job("echo", &echo).await?;
    let job = final_job(&api, posted.body["id"].as_str().unwrap_or_default()).await?;
    assert_eq!((job["status"].as_str(), &job["result"]), (Some("succeeded"), &json!({"x": 1})), "{job}");
    Ok(())
}
