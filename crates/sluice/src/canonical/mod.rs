//! Our own request / response / stream-event / usage types, independent of any wire format.
//! Every translation goes through them: surface -> canonical -> provider, and back.

pub mod openai;
pub mod usage;

pub use usage::Usage;

use serde_json::Value;

/// A chat request, as any surface can express it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Message>,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    pub parallel_tool_calls: Option<bool>,
    pub response_format: Option<ResponseFormat>,
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u64>,
    pub stop: Vec<String>,
    pub seed: Option<i64>,
    pub frequency_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    /// `low` / `medium` / `high` (OpenAI's `reasoning_effort`).
    pub reasoning_effort: Option<String>,
    /// An explicit thinking budget (Anthropic `thinking.budget_tokens`, Gemini
    /// `thinkingBudget`); wins over `reasoning_effort`.
    pub thinking_budget: Option<u64>,
    pub stream: bool,
    /// The client asked for a final usage event on the stream.
    pub include_usage: bool,
    pub user: Option<String>,
    /// Fields we do not model, by name, as sent. A provider forwards those it knows and
    /// drops or rejects the others.
    pub extra: serde_json::Map<String, Value>,
}

impl ChatRequest {
    /// A tool call is forced: `tool_choice` required or named (with tools offered), or
    /// `json_schema` output where codecs implement it as a forced tool (no tools of the
    /// client's own, or no `tool_choice` given).
    pub fn forces_a_tool(&self) -> bool {
        let forced_choice = matches!(
            self.tool_choice,
            Some(ToolChoice::Required | ToolChoice::Named(_))
        ) && !self.tools.is_empty();
        let json_tool = matches!(
            self.response_format,
            Some(ResponseFormat::JsonSchema { .. })
        ) && (self.tool_choice.is_none() || self.tools.is_empty());
        forced_choice || json_tool
    }

    /// The thinking parameter the client used, by its name on the wire.
    pub fn thinking_param(&self) -> &'static str {
        if self.thinking_budget.is_some() {
            "thinking"
        } else {
            "reasoning_effort"
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: Vec<Part>,
    /// Assistant turns: the tool calls it made.
    pub tool_calls: Vec<ToolCall>,
    /// Tool turns: which call this answers.
    pub tool_call_id: Option<String>,
    /// Assistant turns: the reasoning that preceded the answer (thinking blocks keep their
    /// signatures so they can be sent back to the provider that made them).
    pub thinking: Vec<Thinking>,
    pub name: Option<String>,
}

impl Message {
    pub fn new(role: Role, content: Vec<Part>) -> Self {
        Self {
            role,
            content,
            tool_calls: Vec::new(),
            tool_call_id: None,
            thinking: Vec::new(),
            name: None,
        }
    }

    /// The message's text parts, concatenated.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for p in &self.content {
            if let Part::Text { text, .. } = p {
                out.push_str(text);
            }
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text {
        text: String,
        /// Anthropic prompt-caching marker, passed through to providers that take it.
        cache_control: Option<Value>,
    },
    Image(Image),
    /// A part we do not model (`input_audio`, `file`, ...), as the client sent it. OpenAI-
    /// format upstreams get it unchanged; native codecs map what they can and refuse the rest.
    Other(Value),
}

impl Part {
    pub fn text(t: impl Into<String>) -> Self {
        Part::Text {
            text: t.into(),
            cache_control: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Image {
    /// Inline bytes, base64 encoded.
    Base64 {
        media_type: String,
        data: String,
    },
    Url(String),
}

impl Image {
    /// An OpenAI `image_url.url`: a `data:` URL becomes inline bytes.
    pub fn from_url(url: &str) -> Self {
        if let Some(rest) = url.strip_prefix("data:") {
            if let Some((meta, data)) = rest.split_once(',') {
                if let Some(media_type) = meta.strip_suffix(";base64") {
                    return Image::Base64 {
                        media_type: media_type.to_string(),
                        data: data.to_string(),
                    };
                }
            }
        }
        Image::Url(url.to_string())
    }

    pub fn to_url(&self) -> String {
        match self {
            Image::Url(u) => u.clone(),
            Image::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thinking {
    pub text: String,
    pub signature: Option<String>,
    /// Anthropic `redacted_thinking`: opaque data, no text.
    pub redacted: Option<String>,
}

/// Thinking signatures (and OpenAI's `encrypted_content`) only mean something to the model
/// family that made them: another provider refuses a foreign one (a 400 on the next turn
/// after a fallback or a model switch). Those Sluice hands out are tagged
/// `sluice:<family>:<signature>`; a codec sends back the bare signature to its own family
/// and drops the others. Untagged signatures (from before, or passed through untouched)
/// are sent as they are.
pub mod signature {
    const PREFIX: &str = "sluice:";

    /// `sig` tagged as made by `family` (unchanged when it already carries a tag).
    pub fn tag(family: &str, sig: &str) -> String {
        if split(sig).is_some() {
            return sig.to_string();
        }
        format!("{PREFIX}{family}:{sig}")
    }

    /// (family, bare signature) of a tagged signature.
    pub fn split(sig: &str) -> Option<(&str, &str)> {
        sig.strip_prefix(PREFIX)?.split_once(':')
    }

    /// What to send to `family`: the bare signature when it made it (or when nobody
    /// tagged it), nothing when another family did.
    pub fn for_family<'a>(family: &str, sig: &'a str) -> Option<&'a str> {
        match split(sig) {
            Some((f, bare)) if f == family => Some(bare),
            Some(_) => None,
            None => Some(sig),
        }
    }

    /// A body holds a tagged signature (such a request must not bypass the codecs).
    pub fn in_body(body: &[u8]) -> bool {
        memchr::memmem::find(body, b"\"sluice:").is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// JSON text, as the model produced it.
    pub arguments: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of the arguments.
    pub parameters: Value,
    pub strict: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    None,
    Auto,
    Required,
    Named(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema {
        name: String,
        description: Option<String>,
        schema: Value,
        strict: Option<bool>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FinishReason {
    #[default]
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
}

impl FinishReason {
    pub fn as_openai(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::ContentFilter => "content_filter",
        }
    }
}

/// A whole (non-streamed) answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatResponse {
    pub id: String,
    pub model: String,
    pub text: Option<String>,
    pub thinking: Vec<Thinking>,
    pub tool_calls: Vec<ToolCall>,
    pub finish: FinishReason,
    /// The stop sequence the answer ended at, when the provider says which.
    pub stop_sequence: Option<String>,
    pub usage: Option<Usage>,
    /// OpenAI-shaped `choices[].logprobs`, when the provider returned log probabilities.
    pub logprobs: Option<Value>,
    /// The other choices when the client asked for several (`n`), in order from index 1
    /// (their own `usage` is not set: the answer's is for all of them).
    pub choices: Vec<ChatResponse>,
}

impl ChatResponse {
    /// Folds a stream's events into the answer they add up to (tests, replays, and
    /// surfaces that need the whole message).
    pub fn from_events(events: &[StreamEvent]) -> Self {
        let mut r = ChatResponse::default();
        let mut calls: Vec<(u32, ToolCall)> = Vec::new();
        for e in events {
            match e {
                StreamEvent::Start { id, model } => {
                    if !id.is_empty() {
                        r.id.clone_from(id);
                    }
                    if !model.is_empty() {
                        r.model.clone_from(model);
                    }
                }
                StreamEvent::Text(t) => r.text.get_or_insert_with(String::new).push_str(t),
                StreamEvent::Thinking(t) => match r.thinking.last_mut() {
                    Some(th) if th.signature.is_none() && th.redacted.is_none() => {
                        th.text.push_str(t);
                    }
                    _ => r.thinking.push(Thinking {
                        text: t.clone(),
                        signature: None,
                        redacted: None,
                    }),
                },
                StreamEvent::ThinkingSignature(s) => match r.thinking.last_mut() {
                    Some(th) if th.signature.is_none() => th.signature = Some(s.clone()),
                    _ => r.thinking.push(Thinking {
                        text: String::new(),
                        signature: Some(s.clone()),
                        redacted: None,
                    }),
                },
                StreamEvent::RedactedThinking(d) => r.thinking.push(Thinking {
                    text: String::new(),
                    signature: None,
                    redacted: Some(d.clone()),
                }),
                StreamEvent::ToolCallStart { index, id, name } => calls.push((
                    *index,
                    ToolCall {
                        id: id.clone(),
                        name: name.clone(),
                        arguments: String::new(),
                    },
                )),
                StreamEvent::ToolCallArgs { index, delta } => {
                    if let Some((_, c)) = calls.iter_mut().rev().find(|(i, _)| i == index) {
                        c.arguments.push_str(delta);
                    }
                }
                StreamEvent::Finish(f) => r.finish = *f,
                StreamEvent::StopSequence(s) => r.stop_sequence = Some(s.clone()),
                StreamEvent::Usage(u) => r.usage = Some(*u),
            }
        }
        r.tool_calls = calls
            .into_iter()
            .map(|(_, mut c)| {
                // A call that streamed no arguments takes none.
                if c.arguments.is_empty() {
                    c.arguments.push_str("{}");
                }
                c
            })
            .collect();
        r
    }
}

/// One step of a streamed answer. Tool calls are numbered from 0 in the order they start.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    Start {
        id: String,
        model: String,
    },
    Text(String),
    Thinking(String),
    ThinkingSignature(String),
    RedactedThinking(String),
    ToolCallStart {
        index: u32,
        id: String,
        name: String,
    },
    ToolCallArgs {
        index: u32,
        delta: String,
    },
    Finish(FinishReason),
    /// The answer stopped at this stop sequence (with `Finish(Stop)`). Empty from a decoder
    /// whose provider does not say which; the transport resolves it from the request.
    StopSequence(String),
    Usage(Usage),
}
