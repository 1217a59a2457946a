//! The legacy `POST /v1/completions`: the prompt becomes one user message of a chat request
//! run through the chat pipeline (so any chat model serves it), and the answer leaves as a
//! `text_completion` (JSON, or SSE chunks ending in `[DONE]`).

use crate::api::surface::{json_response, run_chat, stream_response, ChatOutcome, SurfaceEncoder};
use crate::api::{read_body, RequestCtx};
use crate::app::{unix_ms, AppState};
use crate::canonical::openai::{encode_request, error_body, RequestError};
use crate::canonical::{ChatRequest, FinishReason, Message, Part, Role, StreamEvent, Usage};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::{json, Map, Value};

pub const SURFACE: &str = "openai.completions";

/// Sampling fields passed on to the chat request as they are.
const PASSED: &[&str] = &[
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "seed",
    "user",
];

fn err(message: impl Into<String>, param: &str) -> RequestError {
    RequestError::new(message, Some(param))
}

struct Decoded {
    chat: ChatRequest,
    prompts: Vec<String>,
}

fn decode(body: &[u8]) -> Result<Decoded, RequestError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        RequestError::new(
            format!("We could not parse the JSON body of your request: {e}"),
            None,
        )
    })?;
    let Value::Object(mut o) = v else {
        return Err(RequestError::new(
            "The request body must be a JSON object",
            None,
        ));
    };
    let model = match o.remove("model") {
        Some(Value::String(m)) if !m.is_empty() => m,
        _ => return Err(err("Missing required parameter: 'model'.", "model")),
    };
    let prompts = match o.remove("prompt") {
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_string) => a
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Some(Value::Array(_)) => {
            return Err(err(
                "prompt must be a string or a non-empty list of strings (token arrays are not supported)",
                "prompt",
            ))
        }
        None | Some(Value::Null) => vec![String::new()],
        Some(_) => return Err(err("prompt must be a string or a list of strings", "prompt")),
    };
    for (k, refused) in [
        ("echo", o.get("echo").and_then(Value::as_bool) == Some(true)),
        ("suffix", o.get("suffix").is_some_and(|v| !v.is_null())),
        (
            "logprobs",
            o.get("logprobs")
                .is_some_and(|v| !v.is_null() && v != &json!(0)),
        ),
        (
            "n",
            o.get("n").and_then(Value::as_u64).is_some_and(|n| n != 1),
        ),
        (
            "best_of",
            o.get("best_of")
                .and_then(Value::as_u64)
                .is_some_and(|n| n != 1),
        ),
    ] {
        if refused {
            return Err(err(
                format!("`{k}` is not supported: this gateway serves completions with chat models"),
                k,
            ));
        }
    }
    let mut chat = ChatRequest {
        model,
        max_tokens: Some(o.get("max_tokens").and_then(Value::as_u64).unwrap_or(16)),
        temperature: o.get("temperature").and_then(Value::as_f64),
        top_p: o.get("top_p").and_then(Value::as_f64),
        stream: o.get("stream").and_then(Value::as_bool) == Some(true),
        include_usage: o
            .get("stream_options")
            .and_then(|s| s.get("include_usage"))
            .and_then(Value::as_bool)
            == Some(true),
        ..ChatRequest::default()
    };
    chat.stop = match o.get("stop") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    let mut extra = Map::new();
    for k in PASSED {
        if let Some(v) = o.remove(*k).filter(|v| !v.is_null()) {
            extra.insert((*k).to_string(), v);
        }
    }
    chat.extra = extra;
    if chat.stream && prompts.len() > 1 {
        return Err(err(
            "streaming takes one prompt; send a list of prompts without `stream`",
            "prompt",
        ));
    }
    Ok(Decoded { chat, prompts })
}

fn invalid(e: &RequestError) -> Response {
    let body = json!({"error": {"message": e.message, "type": "invalid_request_error",
                                "param": e.param, "code": null}});
    json_response(
        StatusCode::BAD_REQUEST,
        http::HeaderMap::new(),
        serde_json::to_vec(&body).unwrap_or_default(),
    )
}

fn usage_json(u: &Usage) -> Value {
    json!({"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens,
           "total_tokens": u.input_tokens + u.output_tokens})
}

fn finish_reason(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Length => "length",
        FinishReason::ContentFilter => "content_filter",
        FinishReason::Stop | FinishReason::ToolCalls => "stop",
    }
}

/// `POST /v1/completions`
pub async fn completions(State(app): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let limit = app.gateway.load().config.server.max_body_bytes;
    let body = match read_body(&parts.headers, body, limit).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let d = match decode(&body) {
        Ok(d) => d,
        Err(e) => {
            super::responses::record_refusal(&app, &parts, SURFACE);
            return invalid(&e);
        }
    };
    let request_id = parts
        .extensions
        .get::<RequestCtx>()
        .map_or_else(String::new, |c| c.request_id.clone());
    let id = format!("cmpl-{request_id}");
    let created = u64::try_from(unix_ms() / 1000).unwrap_or(0);
    let model = d.chat.model.clone();
    let mut choices = Vec::with_capacity(d.prompts.len());
    let mut total = Usage::default();
    let mut last_headers = http::HeaderMap::new();
    // Several prompts: one chat request each, in order (each is admitted and recorded).
    for (index, prompt) in d.prompts.iter().enumerate() {
        let mut chat = d.chat.clone();
        chat.messages = vec![Message::new(Role::User, vec![Part::text(prompt.clone())])];
        let openai = serde_json::to_vec(&encode_request(&chat)).unwrap_or_default();
        match run_chat(&app, &parts, openai, SURFACE).await {
            ChatOutcome::Json { response, headers } => {
                if let Some(u) = &response.usage {
                    total.input_tokens += u.input_tokens;
                    total.output_tokens += u.output_tokens;
                }
                choices.push(
                    json!({"text": response.text.unwrap_or_default(), "index": index,
                                    "logprobs": null,
                                    "finish_reason": finish_reason(response.finish)}),
                );
                last_headers = headers;
            }
            ChatOutcome::Stream { body, headers } => {
                let enc = CompletionEncoder::new(id, model, created, d.chat.include_usage);
                return stream_response(body, headers, enc);
            }
            ChatOutcome::Error {
                status,
                headers,
                message,
                kind,
                code,
            } => {
                return json_response(
                    status,
                    headers,
                    error_body(&message, &kind, code.as_deref()),
                )
            }
        }
    }
    let v = json!({"id": id, "object": "text_completion", "created": created, "model": model,
                   "choices": choices, "usage": usage_json(&total)});
    json_response(
        StatusCode::OK,
        last_headers,
        serde_json::to_vec(&v).unwrap_or_default(),
    )
}

/// Canonical stream events -> `text_completion` chunks.
pub struct CompletionEncoder {
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
}

impl CompletionEncoder {
    pub fn new(id: String, model: String, created: u64, include_usage: bool) -> Self {
        Self {
            id,
            model,
            created,
            include_usage,
            finish: None,
            usage: None,
        }
    }

    fn chunk(&self, out: &mut Vec<u8>, choices: Value, usage: Option<Value>) {
        let mut v = json!({"id": self.id, "object": "text_completion", "created": self.created,
                           "model": self.model, "choices": choices});
        if let Some(u) = usage {
            v["usage"] = u;
        }
        out.extend_from_slice(b"data: ");
        let _ = serde_json::to_writer(&mut *out, &v);
        out.extend_from_slice(b"\n\n");
    }
}

impl SurfaceEncoder for CompletionEncoder {
    fn event(&mut self, e: &StreamEvent, out: &mut Vec<u8>) {
        match e {
            StreamEvent::Text(t) if !t.is_empty() => self.chunk(
                out,
                json!([{"text": t, "index": 0, "logprobs": null, "finish_reason": null}]),
                None,
            ),
            StreamEvent::Finish(f) => self.finish = Some(*f),
            StreamEvent::Usage(u) => self.usage = Some(self.usage.unwrap_or_default().merge(u)),
            _ => {}
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        let f = finish_reason(self.finish.unwrap_or_default());
        self.chunk(
            out,
            json!([{"text": "", "index": 0, "logprobs": null, "finish_reason": f}]),
            None,
        );
        if self.include_usage {
            let u = self.usage.as_ref().map_or(Value::Null, usage_json);
            self.chunk(out, json!([]), Some(u));
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
    }

    fn error(&mut self, message: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&error_body(message, "server_error", None));
        out.extend_from_slice(b"\n\n");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn prompt_forms_and_refusals() {
        let d = decode(br#"{"model":"m","prompt":["a","b"],"max_tokens":5,"stop":"x","seed":3}"#)
            .unwrap();
        assert_eq!(d.prompts, ["a", "b"]);
        assert_eq!(d.chat.max_tokens, Some(5));
        assert_eq!(d.chat.stop, ["x"]);
        assert_eq!(d.chat.extra["seed"], 3);
        // OpenAI's default max_tokens for completions is 16.
        let d = decode(br#"{"model":"m","prompt":"a"}"#).unwrap();
        assert_eq!(d.chat.max_tokens, Some(16));
        for (body, param) in [
            (r#"{"model":"m","prompt":[[1,2]]}"#, "prompt"),
            (r#"{"model":"m","prompt":"a","echo":true}"#, "echo"),
            (r#"{"model":"m","prompt":"a","n":2}"#, "n"),
            (r#"{"prompt":"a"}"#, "model"),
            (
                r#"{"model":"m","prompt":["a","b"],"stream":true}"#,
                "prompt",
            ),
        ] {
            assert_eq!(
                decode(body.as_bytes()).err().unwrap().param.as_deref(),
                Some(param),
                "{body}"
            );
        }
    }

    #[test]
    fn stream_chunks_end_with_finish_usage_done() {
        let mut enc = CompletionEncoder::new("cmpl-1".into(), "m".into(), 1, true);
        let mut out = Vec::new();
        enc.event(&StreamEvent::Text("Hi".into()), &mut out);
        enc.event(&StreamEvent::Finish(FinishReason::Length), &mut out);
        enc.event(
            &StreamEvent::Usage(Usage {
                input_tokens: 2,
                output_tokens: 3,
                ..Usage::default()
            }),
            &mut out,
        );
        enc.finish(&mut out);
        let text = String::from_utf8(out).unwrap();
        let frames: Vec<&str> = text.split("\n\n").filter(|f| !f.is_empty()).collect();
        assert_eq!(frames.len(), 4, "{text}");
        assert!(frames[0].contains(r#""text":"Hi""#));
        assert!(frames[1].contains(r#""finish_reason":"length""#));
        assert!(frames[2].contains(r#""total_tokens":5"#));
        assert_eq!(frames[3], "data: [DONE]");
    }
}
