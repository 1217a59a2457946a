//! Canonical request -> Converse request body.
//!
//! System turns move to `system`; tool results become `toolResult` blocks in a user turn;
//! consecutive turns of one role are merged; signed reasoning goes back as
//! `reasoningContent` so multi-turn thinking round-trips. Images must be inline (Converse
//! takes bytes, not URLs). Model-family settings (thinking, top_k, reasoning effort) go in
//! `additionalModelRequestFields`, spelled the way that family wants them.

use super::JSON_TOOL;
use crate::canonical::openai::RequestError;
use crate::canonical::{ChatRequest, Image, Message, Part, ResponseFormat, Role, ToolChoice};
use crate::providers::native::{leading_system, push_turn, system_context, turns_json, Unhonoured};
use serde_json::{json, Map, Value};

/// Top-level Converse fields a client may send as they are.
const PASSTHROUGH: &[&str] = &[
    "guardrailConfig",
    "performanceConfig",
    "requestMetadata",
    "promptVariables",
    "additionalModelResponseFieldPaths",
];

/// Model families whose extra parameters differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Anthropic,
    Nova,
    OpenAi,
    Other,
}

impl Family {
    /// From a model id, an inference-profile id (`us.anthropic...`) or an ARN (unknown).
    pub fn of(model: &str) -> Self {
        let m = model.to_ascii_lowercase();
        if m.contains("anthropic.") || m.contains("claude") {
            Family::Anthropic
        } else if m.contains("amazon.nova") {
            Family::Nova
        } else if m.contains("openai.") {
            Family::OpenAi
        } else {
            Family::Other
        }
    }
}

/// A Converse body, the parameters left out (and which of them change the answer), and
/// the structured-output tool if one was added.
pub struct ConverseBody {
    pub body: Value,
    pub dropped: Vec<String>,
    pub refused: Vec<Unhonoured>,
    pub json_tool: Option<String>,
}

/// The Converse body for `req`.
pub fn body(req: &ChatRequest, default_max_tokens: u64) -> Result<ConverseBody, RequestError> {
    let family = Family::of(&req.model);
    let mut dropped = Vec::new();
    let mut refused = Vec::new();
    let mut b = Map::new();
    b.insert("messages".into(), Value::Array(messages(&req.messages)?));

    let mut system: Vec<Value> = Vec::new();
    for m in &req.messages[..leading_system(&req.messages)] {
        for p in &m.content {
            if let Part::Text {
                text,
                cache_control,
            } = p
            {
                if !text.is_empty() {
                    system.push(json!({"text": text}));
                    if cache_control.is_some() {
                        system.push(json!({"cachePoint": {"type": "default"}}));
                    }
                }
            }
        }
    }
    if req.response_format == Some(ResponseFormat::JsonObject) {
        system.push(json!({"text": "Respond with a single JSON object and nothing else."}));
    }
    b.insert("system".into(), Value::Array(system));

    // inferenceConfig and the family-specific fields
    let mut inference = Map::new();
    let mut extra = Map::new();
    let mut thinking = req.thinking_budget.or_else(|| {
        req.reasoning_effort.as_deref().and_then(|e| match e {
            "minimal" | "low" => Some(1024),
            "medium" => Some(4096),
            "high" => Some(16384),
            _ => None,
        })
    });
    if family == Family::Anthropic && thinking.is_some() && req.forces_a_tool() {
        thinking = None;
        dropped.push(req.thinking_param().to_string());
        refused.push(crate::providers::anthropic::thinking_with_forced_tool(
            req,
            "Claude on Bedrock",
        ));
    }
    let mut max_tokens = req.max_tokens;
    match (family, thinking) {
        (_, None) => {}
        (Family::Anthropic, Some(budget)) => {
            // Anthropic wants max_tokens above the thinking budget.
            let m = max_tokens.unwrap_or(default_max_tokens);
            max_tokens = Some(if m <= budget {
                budget + default_max_tokens
            } else {
                m
            });
            extra.insert(
                "thinking".into(),
                json!({"type": "enabled", "budget_tokens": budget}),
            );
        }
        (Family::OpenAi, Some(_)) => match req.reasoning_effort.as_deref() {
            Some(effort) => {
                extra.insert("reasoning_effort".into(), json!(effort));
            }
            None => dropped.push("thinking".to_string()),
        },
        (_, Some(_)) => dropped.push(if req.reasoning_effort.is_some() {
            "reasoning_effort".to_string()
        } else {
            "thinking".to_string()
        }),
    }
    if let Some(m) = max_tokens {
        inference.insert("maxTokens".into(), json!(m));
    }
    if let Some(t) = req.temperature {
        if thinking.is_some() && family == Family::Anthropic {
            dropped.push("temperature".to_string());
        } else {
            inference.insert("temperature".into(), json!(t));
        }
    }
    if let Some(p) = req.top_p {
        inference.insert("topP".into(), json!(p));
    }
    if !req.stop.is_empty() {
        inference.insert("stopSequences".into(), json!(req.stop));
        if family == Family::Anthropic {
            // Claude says which sequence stopped it only when asked.
            b.insert(
                "additionalModelResponseFieldPaths".into(),
                json!(["/stop_sequence"]),
            );
        }
    }
    if let Some(k) = req.top_k {
        match family {
            Family::Anthropic => {
                extra.insert("top_k".into(), json!(k));
            }
            Family::Nova => {
                extra.insert("inferenceConfig".into(), json!({"topK": k}));
            }
            _ => dropped.push("top_k".to_string()),
        }
    }
    b.insert("inferenceConfig".into(), Value::Object(inference));
    for (name, set) in [
        ("seed", req.seed.is_some()),
        ("frequency_penalty", req.frequency_penalty.is_some()),
        ("presence_penalty", req.presence_penalty.is_some()),
        (
            "parallel_tool_calls",
            req.parallel_tool_calls == Some(false),
        ),
        ("user", req.user.is_some()),
    ] {
        if set {
            dropped.push(name.to_string());
        }
    }

    // tools
    let json_tool = tool_config(req, &mut b);
    if req.tool_choice == Some(ToolChoice::None) && !req.tools.is_empty() && history_has_tools(req)
    {
        // The history's tool blocks oblige Converse to get the tools, and it has no "none".
        dropped.push("tool_choice".to_string());
        refused.push(Unhonoured::new(
            "tool_choice",
            "`tool_choice: none` with tool calls in the history: Bedrock Converse needs the tools offered then and has no way to forbid calling them",
        ));
    }

    for (k, v) in &req.extra {
        if PASSTHROUGH.contains(&k.as_str()) {
            let mut v = v.clone();
            // The client's response field paths, plus the one asked for above.
            if let (Some(Value::Array(ours)), Value::Array(theirs)) = (b.get(k), &mut v) {
                for p in ours {
                    if !theirs.contains(p) {
                        theirs.push(p.clone());
                    }
                }
            }
            b.insert(k.clone(), v);
        } else if k == "additionalModelRequestFields" {
            if let Value::Object(o) = v {
                extra.extend(o.clone());
            }
        } else if !(k == "n" && v.as_u64() == Some(1)) {
            dropped.push(k.clone());
        }
    }
    if !extra.is_empty() {
        b.insert("additionalModelRequestFields".into(), Value::Object(extra));
    }
    Ok(ConverseBody {
        body: Value::Object(b),
        dropped,
        refused,
        json_tool,
    })
}

/// Tool calls or results in the conversation (Converse then insists on a `toolConfig`).
fn history_has_tools(req: &ChatRequest) -> bool {
    req.messages
        .iter()
        .any(|m| m.role == Role::Tool || !m.tool_calls.is_empty())
}

/// `toolConfig`; returns the structured-output tool's name when one was added.
fn tool_config(req: &ChatRequest, b: &mut Map<String, Value>) -> Option<String> {
    let spec = |name: &str, description: Option<&str>, schema: &Value| {
        let mut s = json!({"name": name, "inputSchema": {"json": schema}});
        if let Some(d) = description {
            s["description"] = json!(d);
        }
        json!({"toolSpec": s})
    };
    let mut tools: Vec<Value> = req
        .tools
        .iter()
        .map(|t| spec(&t.name, t.description.as_deref(), &t.parameters))
        .collect();
    let mut choice = match &req.tool_choice {
        None | Some(ToolChoice::None) => None,
        Some(ToolChoice::Auto) => Some(json!({"auto": {}})),
        Some(ToolChoice::Required) => Some(json!({"any": {}})),
        Some(ToolChoice::Named(n)) => Some(json!({"tool": {"name": n}})),
    };
    if req.tool_choice == Some(ToolChoice::None) && !history_has_tools(req) {
        // Converse has no "none": leaving the tools out is the way to forbid calls. (With
        // tool blocks in the history the API insists on a toolConfig, so they stay.)
        tools.clear();
    }
    let mut json_tool = None;
    if let Some(ResponseFormat::JsonSchema { schema, .. }) = &req.response_format {
        tools.push(spec(
            JSON_TOOL,
            Some("Give the final answer in this structure."),
            schema,
        ));
        if choice.is_none() || req.tools.is_empty() {
            choice = Some(json!({"tool": {"name": JSON_TOOL}}));
        }
        json_tool = Some(JSON_TOOL.to_string());
    }
    if !tools.is_empty() {
        let mut tc = json!({"tools": tools});
        if let Some(c) = choice {
            tc["toolChoice"] = c;
        }
        b.insert("toolConfig".into(), tc);
    }
    json_tool
}

fn messages(msgs: &[Message]) -> Result<Vec<Value>, RequestError> {
    let mut out = Vec::new();
    // Document names must be unique in a request: "Document 1", "Document 2", ...
    let mut docs = 0;
    for m in &msgs[leading_system(msgs)..] {
        let (role, blocks) = match m.role {
            // Later system messages keep their place, as system context in a user turn.
            Role::System => (
                "user",
                content_blocks(&system_context(&m.content), &mut docs)?,
            ),
            Role::User => ("user", content_blocks(&m.content, &mut docs)?),
            Role::Tool => {
                let mut content = content_blocks(&m.content, &mut docs)?;
                content.retain(|b| b.get("cachePoint").is_none());
                if content.is_empty() {
                    // Converse rejects an empty result; say so in words.
                    content.push(json!({"text": "(no output)"}));
                }
                let block = json!({"toolResult": {
                    "toolUseId": m.tool_call_id.clone().unwrap_or_default(),
                    "content": content,
                    "status": "success"}});
                ("user", vec![block])
            }
            Role::Assistant => {
                let mut blocks = Vec::new();
                for t in &m.thinking {
                    if let Some(d) = &t.redacted {
                        blocks.push(json!({"reasoningContent": {"redactedContent": d}}));
                    } else if let Some(sig) = &t.signature {
                        // Unsigned reasoning (another provider's) cannot be sent back.
                        blocks.push(json!({"reasoningContent": {
                            "reasoningText": {"text": t.text, "signature": sig}}}));
                    }
                }
                blocks.extend(content_blocks(&m.content, &mut docs)?);
                for c in &m.tool_calls {
                    let input: Value = if c.arguments.trim().is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(&c.arguments).map_err(|e| {
                            RequestError::new(
                                format!("tool call {} has arguments that are not JSON: {e}", c.id),
                                Some("messages"),
                            )
                        })?
                    };
                    blocks.push(
                        json!({"toolUse": {"toolUseId": c.id, "name": c.name, "input": input}}),
                    );
                }
                ("assistant", blocks)
            }
        };
        push_turn(&mut out, role, blocks);
    }
    Ok(turns_json(out, "content"))
}

fn content_blocks(parts: &[Part], docs: &mut usize) -> Result<Vec<Value>, RequestError> {
    let mut out = Vec::with_capacity(parts.len());
    for p in parts {
        match p {
            Part::Text {
                text,
                cache_control,
            } => {
                if text.is_empty() {
                    continue;
                }
                out.push(json!({"text": text}));
                if cache_control.is_some() {
                    out.push(json!({"cachePoint": {"type": "default"}}));
                }
            }
            Part::Image(Image::Base64 { media_type, data }) => {
                let format = match media_type.as_str() {
                    "image/png" => "png",
                    "image/jpeg" | "image/jpg" => "jpeg",
                    "image/gif" => "gif",
                    "image/webp" => "webp",
                    other => {
                        return Err(RequestError::new(
                            format!("Bedrock takes png, jpeg, gif or webp images, not {other}"),
                            Some("messages"),
                        ))
                    }
                };
                out.push(json!({"image": {"format": format, "source": {"bytes": data}}}));
            }
            Part::Image(Image::Url(_)) => {
                return Err(RequestError::new(
                    "Bedrock takes images inline only: send them as data: URLs (data:image/png;base64,...)",
                    Some("messages"),
                ))
            }
            Part::Other(v) => {
                *docs += 1;
                out.push(document(v, *docs)?);
            }
        }
    }
    Ok(out)
}

/// An OpenAI `file` part with inline data as a Converse `document` block.
fn document(v: &Value, n: usize) -> Result<Value, RequestError> {
    let kind = v["type"].as_str().unwrap_or_default();
    let inline = (kind == "file")
        .then(|| v["file"]["file_data"].as_str().map(Image::from_url))
        .flatten();
    if let Some(Image::Base64 { media_type, data }) = inline {
        let format = match media_type.as_str() {
            "application/pdf" => Some("pdf"),
            "text/plain" => Some("txt"),
            "text/csv" => Some("csv"),
            "text/html" => Some("html"),
            "text/markdown" => Some("md"),
            "application/msword" => Some("doc"),
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => {
                Some("docx")
            }
            "application/vnd.ms-excel" => Some("xls"),
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" => Some("xlsx"),
            _ => None,
        };
        if let Some(format) = format {
            return Ok(
                json!({"document": {"name": format!("Document {n}"), "format": format,
                "source": {"bytes": data}}}),
            );
        }
        return Err(RequestError::new(
            format!("Bedrock does not take {media_type} documents (pdf, txt, csv, html, md, doc, docx, xls and xlsx it does)"),
            Some("messages"),
        ));
    }
    Err(RequestError::new(
        format!(
            "content part type '{kind}' cannot be sent to Bedrock (text, inline image_url and inline file parts can)"
        ),
        Some("messages"),
    ))
}
