//! The protocol lab's runs for the dashboard's replay. A run is computed
//! on request: the lab is deterministic, so the same scenario always gives
//! the same timeline, on every node.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Every protocol and its scenarios.
pub(crate) async fn list() -> Response {
    let protocols: Vec<serde_json::Value> = synod_lab::protocols()
        .iter()
        .map(|p| {
            let scenarios: Vec<serde_json::Value> = synod_lab::scenarios(p)
                .into_iter()
                .map(|s| json!({ "name": s.name, "title": s.title, "about": s.about }))
                .collect();
            json!({ "protocol": p, "scenarios": scenarios })
        })
        .collect();
    let body = serde_json::Value::Array(protocols).to_string();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// One scenario's run: its timeline, step by step, and its verdict.
pub(crate) async fn run(Path((protocol, scenario)): Path<(String, String)>) -> Response {
    // Runs are small and pure, but keep them off the runtime's workers.
    let run = tokio::task::spawn_blocking(move || {
        synod_lab::run(&protocol, &scenario)
            .map(|r| synod_lab::to_json(&r))
            .ok_or(format!("no scenario {scenario:?} in protocol {protocol:?}"))
    })
    .await;
    match run {
        Ok(Ok(body)) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Ok(Err(why)) => (StatusCode::NOT_FOUND, why).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
