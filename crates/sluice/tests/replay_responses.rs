//! Replays of real OpenAI Responses API transcripts: every recorded request either decodes
//! into the canonical model with its items, tools and instructions accounted for, or is
//! refused naming the very field that we cannot serve; our response objects and event
//! streams, built from the recorded answers' content, have the recorded field structure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "replay/cassette.rs"]
mod cassette;

use serde_json::{json, Value};
use sluice::api::openai::responses::encode::{whole, ResponsesEncoder};
use sluice::api::openai::responses::request::{decode, messages_for};
use sluice::api::surface::SurfaceEncoder;
use sluice::canonical::{ChatResponse, FinishReason, Role, StreamEvent, Thinking, ToolCall, Usage};
use std::collections::BTreeSet;

fn responses_posts() -> Vec<(String, cassette::Interaction)> {
    let mut out = Vec::new();
    for file in cassette::list("openai_responses") {
        for (n, i) in cassette::load(&file).into_iter().enumerate() {
            if i.method == "POST" && i.uri.ends_with("/v1/responses") {
                out.push((format!("{file}#{n}"), i));
            }
        }
    }
    out
}

/// The value at an error's `param` path (`input[2].type`, `tools[0].type`, `background`).
fn at_path<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    for seg in path.split('.') {
        let (name, idx) = match seg.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (seg, None),
        };
        cur = cur.get(name)?;
        if let Some(i) = idx {
            cur = cur.get(i)?;
        }
    }
    Some(cur)
}

#[test]
fn recorded_requests_decode_or_are_refused_by_field() {
    let (mut ok, mut refused) = (0, 0);
    for (name, i) in responses_posts() {
        let req = &i.request;
        let body = serde_json::to_vec(req).unwrap();
        match decode(&body) {
            Ok(d) => {
                ok += 1;
                let msgs = messages_for(d.instructions.as_deref(), &[], &d.items).unwrap();
                let items = req["input"].as_array().cloned().unwrap_or_default();
                let count = |t: &str| items.iter().filter(|i| i["type"] == t).count();
                // Every tool result and call survives, in order.
                assert_eq!(
                    msgs.iter().filter(|m| m.role == Role::Tool).count(),
                    count("function_call_output"),
                    "{name}"
                );
                let calls: Vec<&ToolCall> = msgs.iter().flat_map(|m| &m.tool_calls).collect();
                assert_eq!(calls.len(), count("function_call"), "{name}");
                for (c, item) in calls
                    .iter()
                    .zip(items.iter().filter(|i| i["type"] == "function_call"))
                {
                    assert_eq!(c.id, item["call_id"].as_str().unwrap(), "{name}");
                    assert_eq!(c.arguments, item["arguments"].as_str().unwrap(), "{name}");
                }
                assert_eq!(
                    d.chat.tools.len(),
                    req["tools"].as_array().map_or(0, Vec::len),
                    "{name}"
                );
                if let Some(s) = req["instructions"].as_str().filter(|s| !s.is_empty()) {
                    assert_eq!(msgs[0].role, Role::System, "{name}");
                    assert_eq!(msgs[0].text(), s, "{name}");
                }
                if let Some(s) = req["input"].as_str() {
                    assert_eq!(msgs.last().unwrap().text(), s, "{name}");
                }
                assert_eq!(d.chat.model, req["model"].as_str().unwrap());
                assert_eq!(d.chat.stream, req["stream"] == true, "{name}");
                assert_eq!(
                    d.chat.max_tokens,
                    req["max_output_tokens"].as_u64(),
                    "{name}"
                );
                assert_eq!(
                    d.chat.reasoning_effort.as_deref(),
                    req["reasoning"]["effort"].as_str(),
                    "{name}"
                );
                if req["text"]["format"]["type"] == "json_schema" {
                    assert!(d.chat.response_format.is_some(), "{name}");
                }
            }
            Err(e) => {
                refused += 1;
                // The refusal names a field the request really has, and what is in it.
                let param = e.param.clone().unwrap_or_default();
                let v = at_path(req, &param)
                    .unwrap_or_else(|| panic!("{name}: param {param:?} is not in the request"));
                if let Some(s) = v.as_str().filter(|_| param.ends_with(".type")) {
                    assert!(e.message.contains(s), "{name}: {} lacks {s}", e.message);
                }
                let field = param.split(['.', '[']).next().unwrap();
                assert!(
                    [
                        "tools",
                        "input",
                        "background",
                        "conversation",
                        "context_management",
                        "moderation"
                    ]
                    .contains(&field),
                    "{name}: unexpected refusal {e:?}"
                );
            }
        }
    }
    // Figures at the time of writing: 83 decode, 52 refused (built-in tools, background
    // mode, conversations, compaction, moderation).
    assert!(ok >= 80 && refused >= 50, "ok {ok}, refused {refused}");
}

/// A canonical answer with the content of a recorded response object.
fn fold(resp: &Value) -> ChatResponse {
    let mut r = ChatResponse {
        id: resp["id"].as_str().unwrap_or_default().into(),
        model: resp["model"].as_str().unwrap_or_default().into(),
        ..ChatResponse::default()
    };
    for item in resp["output"].as_array().unwrap() {
        match item["type"].as_str().unwrap() {
            "message" => {
                for p in item["content"].as_array().unwrap() {
                    if let Some(t) = p["text"].as_str() {
                        r.text.get_or_insert_with(String::new).push_str(t);
                    }
                }
            }
            "function_call" => r.tool_calls.push(ToolCall {
                id: item["call_id"].as_str().unwrap().into(),
                name: item["name"].as_str().unwrap().into(),
                arguments: item["arguments"].as_str().unwrap().into(),
            }),
            "reasoning" => {
                let text: String = item["summary"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s["text"].as_str())
                    .collect();
                r.thinking.push(Thinking {
                    text,
                    signature: item["encrypted_content"].as_str().map(str::to_string),
                    redacted: None,
                });
            }
            _ => {}
        }
    }
    r.finish = if resp["status"] == "incomplete" {
        FinishReason::Length
    } else if r.tool_calls.is_empty() {
        FinishReason::Stop
    } else {
        FinishReason::ToolCalls
    };
    let u = &resp["usage"];
    if u.is_object() {
        r.usage = Some(Usage {
            input_tokens: u["input_tokens"].as_u64().unwrap(),
            output_tokens: u["output_tokens"].as_u64().unwrap(),
            cached_input_tokens: u["input_tokens_details"]["cached_tokens"]
                .as_u64()
                .unwrap_or(0),
            reasoning_tokens: u["output_tokens_details"]["reasoning_tokens"]
                .as_u64()
                .unwrap_or(0),
            cache_write_tokens: 0,
        });
    }
    r
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// Fields of OpenAI's response object that describe OpenAI's own service (billing, tiers,
/// prompt-cache keys) or features the gateway does not offer; everything else must be there.
const SERVICE_ONLY: &[&str] = &[
    "billing",
    "service_tier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "safety_identifier",
    "top_logprobs",
    "max_tool_calls",
    "conversation",
    "prompt",
    "moderation",
    "context_management",
    "completed_at",
    "frequency_penalty",
    "presence_penalty",
    "output_text",
    "content_filters",
    "tool_usage",
];

/// The usage figures we produce (newer recordings add `cache_write_tokens`).
fn usage_figures(u: &Value) -> [Value; 5] {
    [
        u["input_tokens"].clone(),
        u["output_tokens"].clone(),
        u["total_tokens"].clone(),
        u["input_tokens_details"]["cached_tokens"].clone(),
        u["output_tokens_details"]["reasoning_tokens"].clone(),
    ]
}

/// Supported item kinds only (no built-in tool calls).
fn plain_output(resp: &Value) -> bool {
    resp["output"].as_array().is_some_and(|o| {
        o.iter().all(|i| {
            matches!(
                i["type"].as_str(),
                Some("message" | "function_call" | "reasoning")
            )
        })
    })
}

#[test]
fn our_response_objects_have_the_recorded_structure() {
    let mut checked = 0;
    for (name, i) in responses_posts() {
        if i.status != 200 || !i.content_type().starts_with("application/json") {
            continue;
        }
        let recorded = i.response_json();
        let Ok(d) = decode(&serde_json::to_vec(&i.request).unwrap()) else {
            continue;
        };
        // (test_openai_previous_response_id.yaml was recorded from a test double: its
        // status "complete" is not OpenAI's.)
        let real = matches!(
            recorded["status"].as_str(),
            Some("completed" | "incomplete")
        );
        if !plain_output(&recorded) || recorded["object"] != "response" || !real {
            continue;
        }
        checked += 1;
        let ours = whole(
            &fold(&recorded),
            recorded["id"].as_str().unwrap(),
            recorded["created_at"].as_u64().unwrap(),
            &d.echo,
        );
        let missing: Vec<String> = keys(&recorded)
            .difference(&keys(&ours))
            .filter(|k| !SERVICE_ONLY.contains(&k.as_str()))
            .cloned()
            .collect();
        assert!(missing.is_empty(), "{name}: our response lacks {missing:?}");
        assert_eq!(ours["status"], recorded["status"], "{name}");
        assert_eq!(
            usage_figures(&ours["usage"]),
            usage_figures(&recorded["usage"]),
            "{name}"
        );
        // Tools echo as sent (OpenAI rewrites an empty description to null; we do not).
        let tool_names = |v: &Value| -> Vec<Value> {
            v["tools"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| json!([t["type"], t["name"], t["parameters"], keys(t).len()]))
                .collect()
        };
        assert_eq!(tool_names(&ours), tool_names(&recorded), "{name}");
        let (ro, oo) = (
            recorded["output"].as_array().unwrap(),
            ours["output"].as_array().unwrap(),
        );
        let kinds = |o: &[Value]| -> Vec<String> {
            o.iter()
                .map(|i| i["type"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(kinds(oo), kinds(ro), "{name}");
        for (r, o) in ro.iter().zip(oo) {
            let lacking: Vec<String> = keys(r)
                .difference(&keys(o))
                .filter(|k| *k != "phase")
                .cloned()
                .collect();
            assert!(
                lacking.is_empty(),
                "{name}: {} item lacks {lacking:?}",
                r["type"]
            );
            if r["type"] == "message" {
                let (rk, ok) = (keys(&r["content"][0]), keys(&o["content"][0]));
                assert!(rk.is_subset(&ok), "{name}: {rk:?} vs {ok:?}");
                assert_eq!(r["content"][0]["text"], o["content"][0]["text"], "{name}");
            }
            if r["type"] == "function_call" {
                for k in ["call_id", "name", "arguments", "status"] {
                    assert_eq!(r[k], o[k], "{name}: {k}");
                }
            }
        }
    }
    assert!(
        checked >= 60,
        "only {checked} recorded responses checked (69 when written)"
    );
}

/// (event type, data) of an SSE body.
fn events(body: &[u8]) -> Vec<(String, Value)> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|block| {
            let data = block.lines().find_map(|l| l.strip_prefix("data:"))?;
            let v: Value = serde_json::from_str(data.trim()).ok()?;
            Some((v["type"].as_str()?.to_string(), v))
        })
        .collect()
}

/// The canonical events a provider would have produced for a recorded Responses stream.
fn canonical(recorded: &[(String, Value)]) -> Vec<StreamEvent> {
    let mut out = Vec::new();
    let mut calls = 0u32;
    for (t, d) in recorded {
        match t.as_str() {
            "response.output_text.delta" => {
                out.push(StreamEvent::Text(d["delta"].as_str().unwrap().into()));
            }
            "response.output_item.added" if d["item"]["type"] == "function_call" => {
                out.push(StreamEvent::ToolCallStart {
                    index: calls,
                    id: d["item"]["call_id"].as_str().unwrap().into(),
                    name: d["item"]["name"].as_str().unwrap().into(),
                });
                calls += 1;
            }
            "response.function_call_arguments.delta" => out.push(StreamEvent::ToolCallArgs {
                index: calls - 1,
                delta: d["delta"].as_str().unwrap().into(),
            }),
            "response.completed" => {
                let r = fold(&d["response"]);
                out.push(StreamEvent::Finish(r.finish));
                if let Some(u) = r.usage {
                    out.push(StreamEvent::Usage(u));
                }
            }
            _ => {}
        }
    }
    out
}

/// The event types we produce for message and function-call items, in order.
fn comparable(evs: &[(String, Value)]) -> Vec<String> {
    evs.iter()
        .filter(|(t, d)| {
            let item_kind = d["item"]["type"].as_str();
            let part_kind = d["part"]["type"].as_str().unwrap_or_default();
            !t.contains("reasoning")
                && item_kind != Some("reasoning")
                && !part_kind.contains("reasoning")
                && t != "response.queued"
        })
        .map(|(t, _)| t.clone())
        .collect()
}

#[test]
fn our_event_streams_have_the_recorded_sequence_and_fields() {
    let mut checked = 0;
    for (name, i) in responses_posts() {
        if i.status != 200 || !i.content_type().starts_with("text/event-stream") {
            continue;
        }
        let recorded = events(&i.response);
        let Some((_, last)) = recorded.last() else {
            continue;
        };
        if last["type"] != "response.completed" || !plain_output(&last["response"]) {
            continue;
        }
        let Ok(d) = decode(&serde_json::to_vec(&i.request).unwrap()) else {
            continue;
        };
        checked += 1;
        let mut enc = ResponsesEncoder::new(
            last["response"]["id"].as_str().unwrap().into(),
            last["response"]["created_at"].as_u64().unwrap(),
            d.echo,
            None,
        );
        let mut bytes = Vec::new();
        for e in canonical(&recorded) {
            enc.event(&e, &mut bytes);
        }
        enc.finish(&mut bytes);
        let ours = events(&bytes);
        assert_eq!(comparable(&ours), comparable(&recorded), "{name}");
        // Same fields per event (OpenAI's `obfuscation` padding and `logprobs` aside).
        let (ro, oo): (Vec<_>, Vec<_>) = (
            recorded
                .iter()
                .filter(|(t, d)| comparable(&[(t.clone(), d.clone())]).len() == 1)
                .collect(),
            ours.iter()
                .filter(|(t, d)| comparable(&[(t.clone(), d.clone())]).len() == 1)
                .collect(),
        );
        for ((t, r), (_, o)) in ro.iter().zip(&oo) {
            let lacking: Vec<String> = keys(r)
                .difference(&keys(o))
                .filter(|k| !["obfuscation", "logprobs"].contains(&k.as_str()))
                .cloned()
                .collect();
            assert!(lacking.is_empty(), "{name}: our {t} lacks {lacking:?}");
        }
        let (rf, of) = (&last["response"], &ours.last().unwrap().1["response"]);
        assert_eq!(
            usage_figures(&of["usage"]),
            usage_figures(&rf["usage"]),
            "{name}"
        );
        let text = |r: &Value| -> String {
            r["output"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|i| i["type"] == "message")
                .flat_map(|i| i["content"].as_array().unwrap().iter())
                .filter_map(|p| p["text"].as_str())
                .collect()
        };
        assert_eq!(text(of), text(rf), "{name}");
        assert!(
            ours.iter()
                .enumerate()
                .all(|(n, (_, d))| d["sequence_number"] == json!(n)),
            "{name}"
        );
    }
    assert!(
        checked >= 8,
        "only {checked} recorded streams checked (8 when written)"
    );
}
