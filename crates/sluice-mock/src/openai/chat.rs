//! OpenAI chat completions: request parsing, the deterministic answer, the JSON encoding.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use super::stream::stream_events;
use super::Payload;
use crate::ApiError;

const GREETING: &str = "Hello from sluice-mock!";
const REPLY_PREFIX: &str = "Mock reply to: ";
const ECHO_LIMIT_CHARS: usize = 200;
pub(crate) const TOOL_ARGUMENTS: &str = "{\"mock\":true}";

#[derive(Deserialize)]
struct ChatRequest<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow)]
    messages: Option<Vec<InMessage<'a>>>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    #[serde(borrow)]
    tools: Option<Vec<InTool<'a>>>,
    #[serde(borrow)]
    tool_choice: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct InMessage<'a> {
    #[serde(borrow)]
    role: Cow<'a, str>,
    #[serde(borrow)]
    content: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
struct InTool<'a> {
    #[serde(borrow)]
    function: Option<InFunction<'a>>,
}

#[derive(Deserialize)]
struct InFunction<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

#[derive(Deserialize)]
struct ContentPart<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ToolChoice<'a> {
    Mode(#[serde(borrow)] Cow<'a, str>),
    Named {
        #[serde(borrow)]
        function: InFunction<'a>,
    },
}

/// A JSON string without copying when it has no escapes.
fn json_str(raw: &RawValue) -> serde_json::Result<Cow<'_, str>> {
    match serde_json::from_str::<&str>(raw.get()) {
        Ok(text) => Ok(Cow::Borrowed(text)),
        Err(_) => serde_json::from_str::<String>(raw.get()).map(Cow::Owned),
    }
}

/// The text of a message: a string, or the `text` parts of an array joined by spaces.
fn content_text(content: Option<&RawValue>) -> Result<Cow<'_, str>, ApiError> {
    let Some(raw) = content else {
        return Ok(Cow::Borrowed(""));
    };
    match raw.get().as_bytes().first() {
        Some(b'"') => json_str(raw).map_err(ApiError::bad_json),
        Some(b'[') => {
            let parts: Vec<ContentPart<'_>> = serde_json::from_str(raw.get()).map_err(|e| {
                ApiError::invalid(
                    format!("Invalid message content parts: {e}"),
                    Some("messages"),
                )
            })?;
            let mut texts = parts
                .into_iter()
                .filter(|p| p.kind == "text")
                .filter_map(|p| p.text);
            let first = texts.next().unwrap_or_default();
            Ok(texts.fold(first, |mut joined, text| {
                let owned = joined.to_mut();
                owned.push(' ');
                owned.push_str(&text);
                joined
            }))
        }
        Some(b'n') => Ok(Cow::Borrowed("")),
        _ => Err(ApiError::invalid(
            "Message content must be a string or an array of content parts",
            Some("messages"),
        )),
    }
}

/// The deterministic answer to a chat request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) content: Content,
    pub(crate) prompt_tokens: u64,
    pub(crate) completion_tokens: u64,
    /// The stop sequence the text was cut at ([`Answer::stop_at`]).
    pub(crate) stop_sequence: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Content {
    Text(String),
    ToolCall { name: String },
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

fn estimate_tokens(chars: usize) -> u64 {
    chars.div_ceil(4) as u64
}

fn reply_to(last_user_text: &str) -> String {
    if last_user_text.trim().is_empty() {
        return GREETING.to_owned();
    }
    let end = last_user_text
        .char_indices()
        .nth(ECHO_LIMIT_CHARS)
        .map_or(last_user_text.len(), |(i, _)| i);
    let mut reply = String::with_capacity(REPLY_PREFIX.len() + end);
    reply.push_str(REPLY_PREFIX);
    reply.push_str(&last_user_text[..end]);
    reply
}

fn chosen_tool(request: &ChatRequest<'_>) -> Result<Option<String>, ApiError> {
    let (Some(tools), Some(choice)) = (&request.tools, request.tool_choice) else {
        return Ok(None);
    };
    if tools.is_empty() {
        return Ok(None);
    }
    let choice: ToolChoice<'_> = serde_json::from_str(choice.get()).map_err(|_| {
        ApiError::invalid(
            "tool_choice must be \"none\", \"auto\", \"required\" or a named function",
            Some("tool_choice"),
        )
    })?;
    Ok(match choice {
        ToolChoice::Mode(mode) if mode == "required" => tools
            .iter()
            .find_map(|tool| tool.function.as_ref())
            .map(|function| function.name.to_string()),
        ToolChoice::Mode(_) => None,
        ToolChoice::Named { function } => Some(function.name.into_owned()),
    })
}

/// Prompt tokens: per message ceil(chars / 4) + 3. Completion tokens: words of the reply
/// (for a tool call, ceil(chars / 4) of its name and arguments).
fn answer(request: &ChatRequest<'_>) -> Result<Answer, ApiError> {
    let messages = request.messages.as_deref().ok_or_else(|| {
        ApiError::invalid("Missing required parameter: 'messages'.", Some("messages"))
    })?;
    if messages.is_empty() {
        return Err(ApiError::invalid(
            "'messages' must contain at least one message.",
            Some("messages"),
        ));
    }
    let mut turns = Vec::with_capacity(messages.len());
    for message in messages {
        turns.push((message.role == "user", content_text(message.content)?));
    }
    Ok(answer_question(&turns, chosen_tool(request)?))
}

/// The deterministic answer to a conversation in any wire format: `turns` are
/// (is the user speaking, text); `tool` is the tool the request forces, if any.
pub(crate) fn answer_question(turns: &[(bool, Cow<'_, str>)], tool: Option<String>) -> Answer {
    let mut prompt_tokens = 0;
    let mut last_user = "";
    for (is_user, text) in turns {
        prompt_tokens += estimate_tokens(text.chars().count()) + 3;
        if *is_user {
            last_user = text;
        }
    }
    let (content, completion_tokens) = match tool {
        Some(name) => {
            let tokens = estimate_tokens(name.chars().count() + TOOL_ARGUMENTS.len());
            (Content::ToolCall { name }, tokens)
        }
        None => {
            let reply = reply_to(last_user);
            let tokens = words(&reply);
            (Content::Text(reply), tokens)
        }
    };
    Answer {
        content,
        prompt_tokens,
        completion_tokens,
        stop_sequence: None,
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `POST /v1/chat/completions`
pub(crate) fn chat(body: &[u8], number: u64, chunks: usize) -> Result<Payload, ApiError> {
    let request: ChatRequest<'_> = serde_json::from_slice(body).map_err(ApiError::bad_json)?;
    let model = request
        .model
        .as_deref()
        .ok_or_else(|| ApiError::invalid("Missing required parameter: 'model'.", Some("model")))?;
    let answer = answer(&request)?;
    let created = unix_now();
    if request.stream == Some(true) {
        let include_usage = request
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            == Some(true);
        Ok(Payload::Stream(stream_events(
            number,
            created,
            model,
            &answer,
            chunks,
            include_usage,
        )?))
    } else {
        Ok(Payload::Json(completion_json(
            number, created, model, &answer,
        )?))
    }
}

/// Serialises as `<prefix><number>` without building the string first.
struct Numbered(&'static str, u64);

impl Serialize for Numbered {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{}{}", self.0, self.1))
    }
}

#[derive(Serialize)]
struct Completion<'a> {
    id: Numbered,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [CompletionChoice<'a>; 1],
    usage: Usage,
    system_fingerprint: &'static str,
}

#[derive(Serialize)]
struct CompletionChoice<'a> {
    index: u32,
    message: OutMessage<'a>,
    logprobs: (),
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct OutMessage<'a> {
    role: &'static str,
    content: Option<&'a str>,
    refusal: (),
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[OutToolCall<'a>; 1]>,
}

#[derive(Serialize)]
struct OutToolCall<'a> {
    id: Numbered,
    #[serde(rename = "type")]
    kind: &'static str,
    function: OutFunction<'a>,
}

#[derive(Serialize)]
struct OutFunction<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Serialize, Clone, Copy)]
pub(super) struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

impl Answer {
    /// Cuts the text before the first of `stops` it holds, as a provider honouring stop
    /// sequences does, and remembers which one matched.
    pub(crate) fn stop_at<'a>(&mut self, stops: impl IntoIterator<Item = &'a str>) {
        let Content::Text(text) = &mut self.content else {
            return;
        };
        let first = stops
            .into_iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| text.find(s).map(|at| (at, s)))
            .min_by_key(|(at, _)| *at);
        if let Some((at, s)) = first {
            text.truncate(at);
            self.completion_tokens = words(text);
            self.stop_sequence = Some(s.to_string());
        }
    }

    /// How a text answer ended, in Anthropic's (and Bedrock's) words: `stop_sequence` when
    /// it was cut at one, else `end_turn`.
    pub(crate) fn text_stop_reason(&self) -> &'static str {
        if self.stop_sequence.is_some() {
            "stop_sequence"
        } else {
            "end_turn"
        }
    }

    pub(super) fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            total_tokens: self.prompt_tokens + self.completion_tokens,
        }
    }
}

fn completion_json(
    number: u64,
    created: u64,
    model: &str,
    answer: &Answer,
) -> serde_json::Result<Bytes> {
    let (message, finish_reason) = match &answer.content {
        Content::Text(text) => (
            OutMessage {
                role: "assistant",
                content: Some(text),
                refusal: (),
                tool_calls: None,
            },
            "stop",
        ),
        Content::ToolCall { name } => {
            let call = OutToolCall {
                id: Numbered("call_mock_", number),
                kind: "function",
                function: OutFunction {
                    name,
                    arguments: TOOL_ARGUMENTS,
                },
            };
            (
                OutMessage {
                    role: "assistant",
                    content: None,
                    refusal: (),
                    tool_calls: Some([call]),
                },
                "tool_calls",
            )
        }
    };
    let completion = Completion {
        id: Numbered("chatcmpl-mock-", number),
        object: "chat.completion",
        created,
        model,
        choices: [CompletionChoice {
            index: 0,
            message,
            logprobs: (),
            finish_reason,
        }],
        usage: answer.usage(),
        system_fingerprint: "fp_mock",
    };
    serde_json::to_vec(&completion).map(Bytes::from)
}

#[cfg(test)]
mod tests;
