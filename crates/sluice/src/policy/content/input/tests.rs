#![allow(clippy::unwrap_used)]
use super::*;
use crate::policy::content::{Scope, Stage};
fn rule(detectors: Vec<Detector>, action: Action, scan_tools: bool) -> Rule {
    Rule {
        name: "r".into(),
        stage: Stage::Input,
        detectors,
        action,
        scope: Scope::default(),
        scan_tools,
    }
}

const BODY: &str = r#"{"model":"m","messages":[
    {"role":"user","content":[{"type":"text","text":"mail a@example.com"},{"type":"image_url","image_url":{"url":"x"}}]},
    {"role":"assistant","content":null,"tool_calls":[{"id":"t","type":"function","function":{"name":"send","arguments":"{\"to\":\"b@example.com\"}"}}]},
    {"role":"tool","tool_call_id":"t","content":"sent to c@example.com"}],"vendor_x":1}"#;

#[tokio::test]
async fn tool_arguments_and_results_are_scanned_when_configured() {
    let with = rule(vec![Detector::Email], Action::Redact, true);
    let mut hits = Vec::new();
    let out = guard(&[&with], BODY.as_bytes(), &mut hits).await.unwrap();
    let v: Value = serde_json::from_slice(&out.body.unwrap()).unwrap();
    assert_eq!(v["messages"][0]["content"][0]["text"], "mail [EMAIL_1]");
    assert_eq!(
        v["messages"][1]["tool_calls"][0]["function"]["arguments"],
        "{\"to\":\"[EMAIL_2]\"}"
    );
    assert_eq!(v["messages"][2]["content"], "sent to [EMAIL_3]");
    assert_eq!(v["vendor_x"], 1);
    assert_eq!(hits[0].count, 3);

    let without = rule(vec![Detector::Email], Action::Redact, false);
    let mut hits = Vec::new();
    let out = guard(&[&without], BODY.as_bytes(), &mut hits)
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&out.body.unwrap()).unwrap();
    assert_eq!(v["messages"][2]["content"], "sent to c@example.com");
    assert_eq!(hits[0].count, 1);
}

#[tokio::test]
async fn max_size_blocks_long_prompts_only() {
    let r = rule(vec![Detector::MaxSize(40)], Action::Block, true);
    let mut hits = Vec::new();
    assert!(guard(
        &[&r],
        br#"{"messages":[{"role":"user","content":"short"}]}"#,
        &mut hits
    )
    .await
    .is_ok());
    let long = format!(
        r#"{{"messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(41)
    );
    let err = guard(&[&r], long.as_bytes(), &mut hits).await.unwrap_err();
    assert!(
        err.to_string().contains("longer than the rule allows"),
        "{err}"
    );
    assert_eq!(hits.len(), 1);
}

#[tokio::test]
async fn rules_compose_in_order() {
    // A flag rule after a redacting one sees the placeholders, not the address.
    let redact = rule(vec![Detector::Email], Action::Redact, true);
    let mut flag = rule(vec![Detector::Email], Action::Flag, true);
    flag.name = "f".into();
    let mut hits = Vec::new();
    let body = br#"{"messages":[{"role":"user","content":"a@example.com"}]}"#;
    guard(&[&redact, &flag], body, &mut hits).await.unwrap();
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(&*hits[0].rule, "r");
    // In the other order both see the address.
    let mut hits = Vec::new();
    guard(&[&flag, &redact], body, &mut hits).await.unwrap();
    assert_eq!(hits.len(), 2, "{hits:?}");
}
