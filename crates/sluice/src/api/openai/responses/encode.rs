//! Canonical answers -> OpenAI Responses objects: the `response` JSON and the typed SSE
//! event sequence (`response.created` ... `response.completed`, each with `sequence_number`).

use crate::api::surface::SurfaceEncoder;
use crate::canonical::{ChatResponse, FinishReason, StreamEvent, Thinking, ToolCall, Usage};
use serde_json::{json, Map, Value};

/// What the finished stream hands to the store (see `Stored`).
pub type OnDone = Box<dyn FnOnce(&Value) + Send>;

/// `usage` in the Responses shape.
pub fn usage_json(u: &Usage) -> Value {
    json!({
        "input_tokens": u.input_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_input_tokens},
        "output_tokens": u.output_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.input_tokens + u.output_tokens,
    })
}

/// `status` and `incomplete_details` for a finish reason.
fn status_of(f: FinishReason) -> (&'static str, Value) {
    match f {
        FinishReason::Length => ("incomplete", json!({"reason": "max_output_tokens"})),
        FinishReason::ContentFilter => ("incomplete", json!({"reason": "content_filter"})),
        FinishReason::Stop | FinishReason::ToolCalls => ("completed", Value::Null),
    }
}

/// What every response object of one request repeats.
pub struct Head<'a> {
    pub id: &'a str,
    pub created_at: u64,
    /// Request fields echoed (`model`, `tools`, `instructions`, ...).
    pub echo: &'a Map<String, Value>,
}

/// The response object around `output`, with the request's echoed fields.
pub fn response_object(
    head: &Head<'_>,
    status: &str,
    output: Vec<Value>,
    usage: Option<&Usage>,
    incomplete_details: Value,
    error: Value,
) -> Value {
    let mut o = Map::new();
    o.insert("id".into(), json!(head.id));
    o.insert("object".into(), json!("response"));
    o.insert("created_at".into(), json!(head.created_at));
    o.insert("status".into(), json!(status));
    o.insert("background".into(), json!(false));
    o.insert("error".into(), error);
    o.insert("incomplete_details".into(), incomplete_details);
    for (k, v) in head.echo {
        o.insert(k.clone(), v.clone());
    }
    o.insert("output".into(), Value::Array(output));
    o.insert("usage".into(), usage.map_or(Value::Null, usage_json));
    Value::Object(o)
}

/// Item ids: `{prefix}_{response suffix}{n}` — unique per response, stable in a replay.
pub struct Ids {
    suffix: String,
    n: u32,
}

impl Ids {
    pub fn new(response_id: &str) -> Self {
        Self {
            suffix: response_id
                .strip_prefix("resp_")
                .unwrap_or(response_id)
                .to_string(),
            n: 0,
        }
    }

    pub fn next(&mut self, prefix: &str) -> String {
        self.n += 1;
        format!("{prefix}_{}{:02x}", self.suffix, self.n)
    }
}

/// One reasoning item per thinking block. Its signature rides in `encrypted_content`, so
/// a conversation continued through the store (or by a client that sends the items back)
/// hands each block back with its own; redacted thinking is an item with no text whose
/// `encrypted_content` is the data behind [`REDACTED`].
fn reasoning_item(id: &str, t: &Thinking) -> Value {
    if let Some(d) = &t.redacted {
        return json!({"type": "reasoning", "id": id, "summary": [], "content": [],
                      "encrypted_content": format!("{REDACTED}{d}")});
    }
    let mut v = json!({"type": "reasoning", "id": id, "summary": [],
                       "content": [{"type": "reasoning_text", "text": t.text}]});
    if let Some(sig) = &t.signature {
        v["encrypted_content"] = json!(sig);
    }
    v
}

/// Marks redacted thinking in a reasoning item's `encrypted_content`.
pub const REDACTED: &str = "sluice:redacted:";

fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({"type": "message", "id": id, "status": status, "role": "assistant",
           "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]})
}

fn call_item(id: &str, c: &ToolCall, status: &str) -> Value {
    json!({"type": "function_call", "id": id, "call_id": c.id, "name": c.name,
           "arguments": c.arguments, "status": status})
}

/// The output items of a whole answer.
pub fn output_items(r: &ChatResponse, ids: &mut Ids) -> Vec<Value> {
    let mut out = Vec::new();
    for t in &r.thinking {
        out.push(reasoning_item(&ids.next("rs"), t));
    }
    if let Some(t) = r
        .text
        .as_deref()
        .filter(|t| !t.is_empty() || r.tool_calls.is_empty())
    {
        out.push(message_item(&ids.next("msg"), t, "completed"));
    }
    for c in &r.tool_calls {
        out.push(call_item(&ids.next("fc"), c, "completed"));
    }
    out
}

/// The response object for a whole answer.
pub fn whole(r: &ChatResponse, id: &str, created_at: u64, echo: &Map<String, Value>) -> Value {
    let mut ids = Ids::new(id);
    let (status, incomplete) = status_of(r.finish);
    let head = Head {
        id,
        created_at,
        echo,
    };
    response_object(
        &head,
        status,
        output_items(r, &mut ids),
        r.usage.as_ref(),
        incomplete,
        Value::Null,
    )
}

enum Open {
    Reasoning {
        idx: usize,
        text: String,
        sig: Option<String>,
    },
    Message {
        idx: usize,
        text: String,
    },
}

/// Writes the Responses event sequence as canonical events arrive.
pub struct ResponsesEncoder {
    id: String,
    created_at: u64,
    echo: Map<String, Value>,
    ids: Ids,
    seq: u64,
    started: bool,
    /// Output items so far (closed ones complete; open ones are patched when they close).
    output: Vec<Value>,
    open: Option<Open>,
    /// Function calls stay open until the end (their argument deltas may interleave):
    /// (canonical index, output index).
    calls: Vec<(u32, usize)>,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    on_done: Option<OnDone>,
}

impl ResponsesEncoder {
    pub fn new(
        id: String,
        created_at: u64,
        echo: Map<String, Value>,
        on_done: Option<OnDone>,
    ) -> Self {
        let ids = Ids::new(&id);
        Self {
            id,
            created_at,
            echo,
            ids,
            seq: 0,
            started: false,
            output: Vec::new(),
            open: None,
            calls: Vec::new(),
            finish: None,
            usage: None,
            on_done,
        }
    }

    fn emit(&mut self, out: &mut Vec<u8>, kind: &str, data: Value) {
        // `type` and `sequence_number` first, as OpenAI writes them.
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\ndata: {\"type\":");
        let _ = serde_json::to_writer(&mut *out, kind);
        out.extend_from_slice(b",\"sequence_number\":");
        out.extend_from_slice(self.seq.to_string().as_bytes());
        self.seq += 1;
        // Writing a `Value` into a Vec cannot fail; its opening brace is ours already.
        let rest = serde_json::to_vec(&data).unwrap_or_default();
        match rest.get(1..) {
            Some(tail) if tail.len() > 1 => {
                out.push(b',');
                out.extend_from_slice(tail);
            }
            _ => out.push(b'}'),
        }
        out.extend_from_slice(b"\n\n");
    }

    fn snapshot(
        &self,
        status: &str,
        output: Vec<Value>,
        usage: Option<&Usage>,
        incomplete: Value,
        error: Value,
    ) -> Value {
        let head = Head {
            id: &self.id,
            created_at: self.created_at,
            echo: &self.echo,
        };
        response_object(&head, status, output, usage, incomplete, error)
    }

    fn ensure_started(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let r = self.snapshot("in_progress", Vec::new(), None, Value::Null, Value::Null);
        self.emit(out, "response.created", json!({"response": r}));
        self.emit(out, "response.in_progress", json!({"response": r}));
    }

    fn item_id(&self, idx: usize) -> Value {
        self.output[idx]["id"].clone()
    }

    /// Closes the open reasoning or message item.
    fn close_open(&mut self, out: &mut Vec<u8>) {
        match self.open.take() {
            None => {}
            Some(Open::Reasoning { idx, text, sig }) => {
                let id = self.item_id(idx);
                self.emit(
                    out,
                    "response.reasoning_text.done",
                    json!({
                    "item_id": id, "output_index": idx, "content_index": 0, "text": text}),
                );
                let th = Thinking {
                    text,
                    signature: sig,
                    redacted: None,
                };
                let item = reasoning_item(id.as_str().unwrap_or_default(), &th);
                self.output[idx] = item.clone();
                self.emit(
                    out,
                    "response.output_item.done",
                    json!({"output_index": idx, "item": item}),
                );
            }
            Some(Open::Message { idx, text }) => {
                let id = self.item_id(idx);
                let part =
                    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []});
                self.emit(out, "response.output_text.done", json!({
                    "item_id": id, "output_index": idx, "content_index": 0, "text": text, "logprobs": []}));
                self.emit(
                    out,
                    "response.content_part.done",
                    json!({
                    "item_id": id, "output_index": idx, "content_index": 0, "part": part}),
                );
                let item = message_item(id.as_str().unwrap_or_default(), &text, "completed");
                self.output[idx] = item.clone();
                self.emit(
                    out,
                    "response.output_item.done",
                    json!({"output_index": idx, "item": item}),
                );
            }
        }
    }

    fn close_calls(&mut self, out: &mut Vec<u8>) {
        for (_, idx) in std::mem::take(&mut self.calls) {
            let mut item = self.output[idx].clone();
            item["status"] = json!("completed");
            self.output[idx] = item.clone();
            self.emit(
                out,
                "response.function_call_arguments.done",
                json!({
                "item_id": item["id"], "output_index": idx, "arguments": item["arguments"]}),
            );
            self.emit(
                out,
                "response.output_item.done",
                json!({"output_index": idx, "item": item}),
            );
        }
    }

    fn on_text(&mut self, t: &str, out: &mut Vec<u8>) {
        if !matches!(self.open, Some(Open::Message { .. })) {
            self.close_open(out);
            let idx = self.output.len();
            let id = self.ids.next("msg");
            let item = json!({"type": "message", "id": id, "status": "in_progress",
                              "role": "assistant", "content": []});
            self.output.push(item.clone());
            self.emit(
                out,
                "response.output_item.added",
                json!({"output_index": idx, "item": item}),
            );
            self.emit(
                out,
                "response.content_part.added",
                json!({
                "item_id": id, "output_index": idx, "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}),
            );
            self.open = Some(Open::Message {
                idx,
                text: String::new(),
            });
        }
        let Some(Open::Message { idx, text }) = &mut self.open else {
            return;
        };
        text.push_str(t);
        let idx = *idx;
        let id = self.item_id(idx);
        self.emit(
            out,
            "response.output_text.delta",
            json!({
            "item_id": id, "output_index": idx, "content_index": 0, "delta": t, "logprobs": []}),
        );
    }

    fn on_thinking(&mut self, t: &str, sig: Option<&str>, out: &mut Vec<u8>) {
        if !matches!(self.open, Some(Open::Reasoning { .. })) {
            self.close_open(out);
            let idx = self.output.len();
            let id = self.ids.next("rs");
            let item = json!({"type": "reasoning", "id": id, "summary": [], "content": []});
            self.output.push(item.clone());
            self.emit(
                out,
                "response.output_item.added",
                json!({"output_index": idx, "item": item}),
            );
            self.open = Some(Open::Reasoning {
                idx,
                text: String::new(),
                sig: None,
            });
        }
        let Some(Open::Reasoning { idx, text, sig: s }) = &mut self.open else {
            return;
        };
        let idx = *idx;
        if let Some(sig) = sig {
            // A signature closes its block: the next thinking is a new item.
            *s = Some(sig.to_string());
            self.close_open(out);
            return;
        }
        if t.is_empty() {
            return;
        }
        text.push_str(t);
        let id = self.item_id(idx);
        self.emit(
            out,
            "response.reasoning_text.delta",
            json!({
            "item_id": id, "output_index": idx, "content_index": 0, "delta": t}),
        );
    }
}

impl SurfaceEncoder for ResponsesEncoder {
    fn event(&mut self, e: &StreamEvent, out: &mut Vec<u8>) {
        self.ensure_started(out);
        match e {
            StreamEvent::Start { .. } => {}
            StreamEvent::Text(t) => {
                if !t.is_empty() {
                    self.on_text(t, out);
                }
            }
            StreamEvent::Thinking(t) => self.on_thinking(t, None, out),
            StreamEvent::ThinkingSignature(s) => self.on_thinking("", Some(s), out),
            StreamEvent::RedactedThinking(d) => {
                self.close_open(out);
                let idx = self.output.len();
                let th = Thinking {
                    text: String::new(),
                    signature: None,
                    redacted: Some(d.clone()),
                };
                let item = reasoning_item(&self.ids.next("rs"), &th);
                self.output.push(item.clone());
                for kind in ["response.output_item.added", "response.output_item.done"] {
                    self.emit(out, kind, json!({"output_index": idx, "item": item}));
                }
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                self.close_open(out);
                let idx = self.output.len();
                let item_id = self.ids.next("fc");
                let item = json!({"type": "function_call", "id": item_id, "call_id": id,
                                  "name": name, "arguments": "", "status": "in_progress"});
                self.output.push(item.clone());
                self.calls.push((*index, idx));
                self.emit(
                    out,
                    "response.output_item.added",
                    json!({"output_index": idx, "item": item}),
                );
            }
            StreamEvent::ToolCallArgs { index, delta } => {
                let Some(&(_, idx)) = self.calls.iter().rev().find(|(i, _)| i == index) else {
                    return;
                };
                if delta.is_empty() {
                    return;
                }
                let args = format!(
                    "{}{delta}",
                    self.output[idx]["arguments"].as_str().unwrap_or_default()
                );
                self.output[idx]["arguments"] = json!(args);
                let id = self.item_id(idx);
                self.emit(
                    out,
                    "response.function_call_arguments.delta",
                    json!({
                    "item_id": id, "output_index": idx, "delta": delta}),
                );
            }
            StreamEvent::Finish(f) => self.finish = Some(*f),
            // The Responses API does not say which stop sequence ended an answer.
            StreamEvent::StopSequence(_) => {}
            StreamEvent::Usage(u) => {
                self.usage = Some(self.usage.unwrap_or_default().merge(u));
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        self.ensure_started(out);
        self.close_open(out);
        self.close_calls(out);
        let (status, incomplete) = status_of(self.finish.unwrap_or_default());
        let r = self.snapshot(
            status,
            self.output.clone(),
            self.usage.as_ref(),
            incomplete,
            Value::Null,
        );
        if let Some(done) = self.on_done.take() {
            done(&r);
        }
        let kind = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        self.emit(out, kind, json!({"response": r}));
    }

    fn error(&mut self, message: &str, out: &mut Vec<u8>) {
        self.ensure_started(out);
        self.on_done = None;
        self.emit(
            out,
            "error",
            json!({"code": "server_error", "message": message, "param": null}),
        );
        let r = self.snapshot(
            "failed",
            self.output.clone(),
            self.usage.as_ref(),
            Value::Null,
            json!({"code": "server_error", "message": message}),
        );
        self.emit(out, "response.failed", json!({"response": r}));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn run(events: &[StreamEvent]) -> Vec<Value> {
        let mut enc = ResponsesEncoder::new("resp_ab".into(), 7, Map::new(), None);
        let mut out = Vec::new();
        for e in events {
            enc.event(e, &mut out);
        }
        enc.finish(&mut out);
        String::from_utf8(out)
            .unwrap()
            .split("\n\n")
            .filter(|b| !b.is_empty())
            .map(|b| {
                serde_json::from_str(b.lines().nth(1).unwrap().strip_prefix("data: ").unwrap())
                    .unwrap()
            })
            .collect()
    }

    fn types(evs: &[Value]) -> Vec<&str> {
        evs.iter().map(|e| e["type"].as_str().unwrap()).collect()
    }

    #[test]
    fn interleaved_parallel_calls_each_get_their_arguments() {
        let call = |index, id: &str| StreamEvent::ToolCallStart {
            index,
            id: id.into(),
            name: "f".into(),
        };
        let args = |index, d: &str| StreamEvent::ToolCallArgs {
            index,
            delta: d.into(),
        };
        let evs = run(&[
            StreamEvent::Text("a".into()),
            call(0, "c0"),
            call(1, "c1"),
            args(0, "{\"x\":"),
            args(1, "{}"),
            args(0, "1}"),
            StreamEvent::Finish(FinishReason::ToolCalls),
        ]);
        let done = &evs.last().unwrap()["response"];
        assert_eq!(done["status"], "completed");
        let out = done["output"].as_array().unwrap();
        assert_eq!(out[0]["type"], "message");
        assert_eq!(
            (out[1]["call_id"].as_str(), out[1]["arguments"].as_str()),
            (Some("c0"), Some("{\"x\":1}"))
        );
        assert_eq!(
            (out[2]["call_id"].as_str(), out[2]["arguments"].as_str()),
            (Some("c1"), Some("{}"))
        );
        // The message closes when the first call starts; calls close at the end, in order.
        let t = types(&evs);
        let msg_done = t
            .iter()
            .position(|x| *x == "response.output_item.done")
            .unwrap();
        let first_call = t
            .iter()
            .rposition(|x| *x == "response.output_item.added")
            .unwrap();
        assert!(msg_done < first_call, "{t:?}");
        let deltas: Vec<_> = evs
            .iter()
            .filter(|e| e["type"] == "response.function_call_arguments.delta")
            .map(|e| {
                (
                    e["output_index"].as_u64().unwrap(),
                    e["delta"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            deltas,
            [(1, "{\"x\":".into()), (2, "{}".into()), (1, "1}".into())]
        );
        assert!(evs
            .iter()
            .enumerate()
            .all(|(i, e)| e["sequence_number"] == i));
    }

    #[test]
    fn length_stop_is_incomplete() {
        let evs = run(&[
            StreamEvent::Text("a".into()),
            StreamEvent::Finish(FinishReason::Length),
        ]);
        let last = evs.last().unwrap();
        assert_eq!(last["type"], "response.incomplete");
        assert_eq!(last["response"]["status"], "incomplete");
        assert_eq!(
            last["response"]["incomplete_details"]["reason"],
            "max_output_tokens"
        );
        let r = ChatResponse {
            text: Some("a".into()),
            finish: FinishReason::Length,
            ..ChatResponse::default()
        };
        let v = whole(&r, "resp_x", 1, &Map::new());
        assert_eq!(v["status"], "incomplete");
        assert_eq!(v["output"][0]["id"], "msg_x01");
    }
    #[test]
    fn each_thinking_block_keeps_its_signature_and_redacted_thinking_is_carried() {
        let blocks = vec![
            Thinking {
                text: "first".into(),
                signature: Some("sluice:claude:s1".into()),
                redacted: None,
            },
            Thinking {
                text: String::new(),
                signature: None,
                redacted: Some("sluice:claude:opaque".into()),
            },
            Thinking {
                text: "second".into(),
                signature: Some("sluice:claude:s2".into()),
                redacted: None,
            },
        ];
        let r = ChatResponse {
            thinking: blocks.clone(),
            text: Some("answer".into()),
            ..ChatResponse::default()
        };
        let whole_items = whole(&r, "resp_x", 1, &Map::new())["output"].clone();
        // Streamed: the same items, one per block.
        let evs = run(&[
            StreamEvent::Thinking("fir".into()),
            StreamEvent::Thinking("st".into()),
            StreamEvent::ThinkingSignature("sluice:claude:s1".into()),
            StreamEvent::RedactedThinking("sluice:claude:opaque".into()),
            StreamEvent::Thinking("second".into()),
            StreamEvent::ThinkingSignature("sluice:claude:s2".into()),
            StreamEvent::Text("answer".into()),
        ]);
        let streamed_items = evs.last().unwrap()["response"]["output"].clone();
        for items in [&whole_items, &streamed_items] {
            let reasoning: Vec<(&str, &str)> = items
                .as_array()
                .unwrap()
                .iter()
                .filter(|i| i["type"] == "reasoning")
                .map(|i| {
                    (
                        i["content"][0]["text"].as_str().unwrap_or(""),
                        i["encrypted_content"].as_str().unwrap(),
                    )
                })
                .collect();
            assert_eq!(
                reasoning,
                [
                    ("first", "sluice:claude:s1"),
                    ("", "sluice:redacted:sluice:claude:opaque"),
                    ("second", "sluice:claude:s2")
                ],
                "{items}"
            );
        }
        // Sent back as input items, the blocks come back as they were.
        let msgs = super::super::request::messages_for(None, &[], whole_items.as_array().unwrap())
            .unwrap();
        assert_eq!(msgs[0].thinking, blocks);
    }
}
