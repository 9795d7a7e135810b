//! Errors reach clients as a documented code and a safe message; what went
//! wrong inside (addresses, URLs, OS errors) stays in the logs.

use crate::common;

use common::{TIMEOUT, TestStack};
use serde_json::json;

/// An LLM agent whose endpoint refuses connections (port 9, discard).
const UNREACHABLE_LLM: &str = r#"
[[agents]]
name = "echo"
description = "echo"
kind = "echo"

[[agents]]
name = "assistant"
description = "an llm that cannot be reached"
kind = "llm"
base_url = "http://127.0.0.1:9/v1"
model = "stand-in"
"#;

/// Internal details a run error must not carry.
const LEAKS: [&str; 6] = [
    "127.0.0.1",
    "os error",
    "tcp",
    "connect",
    "unreachable",
    "completions",
];

fn assert_no_leak(what: &str, text: &str) {
    for leak in LEAKS {
        assert!(!text.contains(leak), "{what} leaks `{leak}`: {text}");
    }
}

#[tokio::test]
async fn a_failed_run_reaches_clients_as_a_code_and_a_safe_message() -> anyhow::Result<()> {
    // Arrange: one attempt per run, so the failure is final at once.
    let builder = chat_testkit::Stack::builder()
        .agents(UNREACHABLE_LLM)
        .core(|s| s.run_max_attempts = 1)
        .with_gateway();
    let stack = TestStack::from_builder(builder).await?;
    let token = stack.user("leak_probe").await?;
    let session_id = stack.session(&token, "assistant").await?;
    let mut ws = stack.ws(&token).await?;
    ws.subscribe(&session_id).await;

    // Act: the same failure over REST (JSON), SSE and the WebSocket.
    let posted = stack
        .http
        .post(stack.url(&format!("/api/v1/sessions/{session_id}/messages")))
        .bearer_auth(&token)
        .json(&json!({"content": "hello?"}))
        .send()
        .await?;
    let status = posted.status();
    let body: serde_json::Value = posted.json().await?;
    let frames = ws
        .recv_until(|f| f["type"] == "run" && f["status"] == "failed")
        .await;
    let sse = stack
        .http
        .post(stack.url(&format!("/api/v1/sessions/{session_id}/messages")))
        .bearer_auth(&token)
        .header("accept", "text/event-stream")
        .json(&json!({"content": "still there?"}))
        .timeout(TIMEOUT)
        .send()
        .await?
        .text()
        .await?;

    // Assert: the documented code with its fixed message, and nothing else.
    let expected = "upstream_unavailable: the agent's upstream service is unavailable";
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["run"]["status"], "failed", "{body}");
    assert_eq!(body["run"]["error"], expected, "{body}");
    let failed = frames.last().expect("a failed run frame");
    assert_eq!(failed["error"], expected, "{failed}");
    assert!(sse.contains(expected), "{sse}");
    assert_no_leak("the REST answer", &body.to_string());
    assert_no_leak("the WebSocket frame", &failed.to_string());
    assert_no_leak("the SSE stream", &sse);
    Ok(())
}
