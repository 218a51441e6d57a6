//! The composition root in-process: `App::build` from a parsed `serve` command line, and the router called
//! without a socket (the handlers, extractors and error mapping exactly as served).

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use clap::Parser;
use flowork_gateway::app::App;
use flowork_gateway::config::{Cli, Command};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

/// Calls the router once, as a client at 127.0.0.1 would; returns the status and the JSON body.
async fn call(app: &App, request: Request<Body>) -> (StatusCode, Value) {
    let mut request = request;
    request.extensions_mut().insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40_000))));
    let response = app.router.clone().oneshot(request).await.expect("the router answers");
    let status = response.status();
    let bytes = response.into_body().collect().await.expect("a body").to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_app_builds_from_its_configuration_and_serves_in_process() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data_dir = dir.path().to_str().expect("a UTF-8 path").to_string();
    let cli = Cli::try_parse_from(["flowork-gateway", "serve", "--data-dir", &data_dir]).expect("serve flags");
    let Command::Serve(args) = cli.command else { panic!("parsed as serve") };
    let app = App::build(&args, SocketAddr::from(([127, 0, 0, 1], 8080))).await.expect("the app builds");

    let (status, _) = call(&app, Request::get("/healthz").body(Body::empty()).expect("request")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(&app, Request::get("/status").body(Body::empty()).expect("request")).await;
    assert_eq!((status, body["store"].as_str()), (StatusCode::OK, Some("sqlite")));

    // No token: the one error mapping answers, with its machine-readable code.
    let job = json!({"engine": "e1", "kind": "echo", "payload": {"n": 1}}).to_string();
    let post = |token: Option<&str>| {
        let mut builder = Request::post("/jobs")
            .header(header::CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", "in-process-1");
        if let Some(token) = token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        builder.body(Body::from(job.clone())).expect("request")
    };
    let (status, body) = call(&app, post(None)).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("missing_token")));

    // A registered engine and a token signed by the app's own keys: the job is stored and read back.
    app.stores.control.add_engine("e1", Some("alice"), "hash-of-a-token").await.expect("engine added");
    let now = flowork_common::clock::system_now_ms();
    let token = app.state.keys.mint("alice", Duration::from_secs(600), now).expect("a token");
    let (status, created) = call(&app, post(Some(&token))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!((created["status"].as_str(), created["user"].as_str()), (Some("queued"), Some("alice")));
    let id = created["id"].as_str().expect("an id");
    let get = Request::get(format!("/jobs/{id}"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .expect("request");
    let (status, read) = call(&app, get).await;
    assert_eq!((status, &read["payload"]), (StatusCode::OK, &json!({"n": 1})));
    app.state.shutdown.cancel();
}
