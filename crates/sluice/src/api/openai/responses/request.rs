//! A Responses API request (`POST /v1/responses`) -> the canonical chat request, plus what
//! the answer must echo and what the store keeps (input items in a normalised form).

use crate::canonical::openai::RequestError;
use crate::canonical::{
    ChatRequest, Image, Message, Part, ResponseFormat, Role, Thinking, Tool, ToolCall, ToolChoice,
};
use serde_json::{json, Map, Value};

/// A parsed request. `chat.messages` is empty: the handler builds it from the stored history,
/// `instructions` and `items` (see [`messages_for`]).
#[derive(Debug)]
pub struct Decoded {
    pub chat: ChatRequest,
    pub instructions: Option<String>,
    /// This request's input, as message / function_call / function_call_output items.
    pub items: Vec<Value>,
    pub store: bool,
    pub previous_response_id: Option<String>,
    /// Request fields the response object repeats (`tools`, `tool_choice`, `text`, ...).
    pub echo: Map<String, Value>,
}

/// Built-in tools that only OpenAI runs; named in the 400 when a translated route gets them.
const BUILTIN_TOOLS: &[&str] = &[
    "web_search",
    "web_search_preview",
    "web_search_2025_08_26",
    "web_search_preview_2025_03_11",
    "file_search",
    "computer_use_preview",
    "computer_use",
    "code_interpreter",
    "image_generation",
    "mcp",
    "local_shell",
    "shell",
    "custom",
    "apply_patch",
];

/// Accepted and without effect through a translated route (OpenAI-only knobs).
const IGNORED: &[&str] = &[
    "include",
    "truncation",
    "service_tier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "safety_identifier",
    "top_logprobs",
    "max_tool_calls",
    "stream_options",
];

fn err(message: impl Into<String>, param: &str) -> RequestError {
    RequestError::new(message, Some(param))
}

/// Parses a `POST /v1/responses` body.
pub fn decode(body: &[u8]) -> Result<Decoded, RequestError> {
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
    let items = normalise_input(o.remove("input"))?;
    // Validate the items now, so a bad one is a 400 before any history is loaded.
    items_to_messages(&items, "input")?;
    let instructions = match o.remove("instructions") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(err("instructions must be a string", "instructions")),
    };
    let mut chat = ChatRequest {
        model: model.clone(),
        ..ChatRequest::default()
    };
    let mut echo = Map::new();
    echo.insert("model".into(), json!(model));
    echo.insert("instructions".into(), json!(instructions));

    let tools = o.remove("tools").unwrap_or(Value::Null);
    if let Value::Array(list) = &tools {
        for (i, t) in list.iter().enumerate() {
            chat.tools.push(decode_tool(t, i)?);
        }
    } else if !tools.is_null() {
        return Err(err("tools must be an array", "tools"));
    }
    echo.insert(
        "tools".into(),
        if tools.is_null() { json!([]) } else { tools },
    );
    let tool_choice = o.remove("tool_choice").unwrap_or(Value::Null);
    chat.tool_choice = decode_tool_choice(&tool_choice)?;
    echo.insert(
        "tool_choice".into(),
        if tool_choice.is_null() {
            json!("auto")
        } else {
            tool_choice
        },
    );
    let parallel = o.remove("parallel_tool_calls").and_then(|v| v.as_bool());
    chat.parallel_tool_calls = parallel;
    echo.insert(
        "parallel_tool_calls".into(),
        json!(parallel.unwrap_or(true)),
    );

    chat.max_tokens = num_u64(&mut o, "max_output_tokens")?;
    echo.insert("max_output_tokens".into(), json!(chat.max_tokens));
    chat.temperature = num_f64(&mut o, "temperature")?;
    chat.top_p = num_f64(&mut o, "top_p")?;
    echo.insert("temperature".into(), json!(chat.temperature.unwrap_or(1.0)));
    echo.insert("top_p".into(), json!(chat.top_p.unwrap_or(1.0)));

    let text = o.remove("text").unwrap_or(Value::Null);
    chat.response_format = decode_text_format(&text)?;
    let mut text_echo = if text.is_object() { text } else { json!({}) };
    if text_echo.get("format").is_none_or(Value::is_null) {
        text_echo["format"] = json!({"type": "text"});
    }
    echo.insert("text".into(), text_echo);

    let reasoning = o.remove("reasoning").unwrap_or(Value::Null);
    chat.reasoning_effort = reasoning
        .get("effort")
        .and_then(Value::as_str)
        .map(str::to_string);
    echo.insert(
        "reasoning".into(),
        json!({"effort": chat.reasoning_effort, "summary": reasoning.get("summary").cloned().unwrap_or(Value::Null)}),
    );

    chat.stream = match o.remove("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(_) => return Err(err("stream must be a boolean", "stream")),
    };
    chat.include_usage = chat.stream;
    let store = match o.remove("store") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => b,
        Some(_) => return Err(err("store must be a boolean", "store")),
    };
    echo.insert("store".into(), json!(store));
    let previous_response_id = match o.remove("previous_response_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s),
        Some(_) => {
            return Err(err(
                "previous_response_id must be a response id string",
                "previous_response_id",
            ))
        }
    };
    echo.insert("previous_response_id".into(), json!(previous_response_id));
    let metadata = o.remove("metadata").unwrap_or(Value::Null);
    if let Value::Object(m) = &metadata {
        if m.len() > 16 || m.values().any(|v| !v.is_string()) {
            return Err(err("metadata holds at most 16 string values", "metadata"));
        }
    } else if !metadata.is_null() {
        return Err(err("metadata must be an object", "metadata"));
    }
    echo.insert(
        "metadata".into(),
        if metadata.is_null() {
            json!({})
        } else {
            metadata
        },
    );
    chat.user = match o.remove("user") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(err("user must be a string", "user")),
    };
    echo.insert("user".into(), json!(chat.user));
    if o.remove("background").and_then(|b| b.as_bool()) == Some(true) {
        return Err(err(
            "background responses are not supported by this gateway; send the request without `background`",
            "background",
        ));
    }
    for field in ["conversation", "prompt"] {
        if o.get(field).is_some_and(|v| !v.is_null()) {
            return Err(err(
                format!("`{field}` is not supported by this gateway; use `previous_response_id` (conversations) or send the prompt's text as `instructions`"),
                field,
            ));
        }
        o.remove(field);
    }
    // Sampling fields the chat pipeline also understands are passed on; OpenAI-only knobs
    // are dropped; anything else is refused as OpenAI does.
    for (k, v) in o {
        if IGNORED.contains(&k.as_str()) {
            continue;
        }
        match k.as_str() {
            "seed" => chat.seed = v.as_i64(),
            "stop" => chat.stop = v.as_str().map(|s| vec![s.to_string()]).unwrap_or_default(),
            _ => {
                return Err(err(
                    format!("Unrecognized request argument supplied: {k}"),
                    &k,
                ))
            }
        }
    }
    echo.insert("truncation".into(), json!("disabled"));
    Ok(Decoded {
        chat,
        instructions,
        items,
        store,
        previous_response_id,
        echo,
    })
}

fn num_u64(o: &mut Map<String, Value>, k: &str) -> Result<Option<u64>, RequestError> {
    match o.remove(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| err(format!("{k} must be a non-negative integer"), k)),
    }
}

fn num_f64(o: &mut Map<String, Value>, k: &str) -> Result<Option<f64>, RequestError> {
    match o.remove(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| err(format!("{k} must be a number"), k)),
    }
}

fn decode_tool(t: &Value, i: usize) -> Result<Tool, RequestError> {
    let kind = t.get("type").and_then(Value::as_str).unwrap_or("");
    if kind != "function" {
        let name = if kind.is_empty() { "(no type)" } else { kind };
        let why = if BUILTIN_TOOLS.contains(&kind) {
            "is a built-in OpenAI tool, which this gateway cannot run for the model's provider; \
             only function tools are supported here"
        } else {
            "is not a supported tool type (only function tools are)"
        };
        return Err(err(
            format!("Tool type '{name}' {why}"),
            &format!("tools[{i}].type"),
        ));
    }
    let name = t
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            err(
                "Missing required parameter: function tools need a name",
                &format!("tools[{i}].name"),
            )
        })?;
    Ok(Tool {
        name: name.to_string(),
        description: t
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_string),
        parameters: t
            .get("parameters")
            .filter(|p| !p.is_null())
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        strict: t.get("strict").and_then(Value::as_bool),
    })
}

fn decode_tool_choice(v: &Value) -> Result<Option<ToolChoice>, RequestError> {
    Ok(match v {
        Value::Null => None,
        Value::String(s) => Some(match s.as_str() {
            "none" => ToolChoice::None,
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            other => {
                return Err(err(
                    format!("Invalid value for tool_choice: '{other}' (expected none, auto, required or a function)"),
                    "tool_choice",
                ))
            }
        }),
        Value::Object(o) => match o.get("type").and_then(Value::as_str) {
            Some("function") => match o.get("name").and_then(Value::as_str) {
                Some(n) => Some(ToolChoice::Named(n.to_string())),
                None => return Err(err("tool_choice of type function needs a name", "tool_choice.name")),
            },
            Some("allowed_tools") => Some(
                if o.get("mode").and_then(Value::as_str) == Some("required") {
                    ToolChoice::Required
                } else {
                    ToolChoice::Auto
                },
            ),
            other => {
                return Err(err(
                    format!(
                        "tool_choice type '{}' is not supported (only function tools are)",
                        other.unwrap_or("")
                    ),
                    "tool_choice.type",
                ))
            }
        },
        _ => return Err(err("tool_choice must be a string or an object", "tool_choice")),
    })
}

fn decode_text_format(text: &Value) -> Result<Option<ResponseFormat>, RequestError> {
    let Some(f) = text.get("format").filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    Ok(Some(match f.get("type").and_then(Value::as_str) {
        Some("text") => ResponseFormat::Text,
        Some("json_object") => ResponseFormat::JsonObject,
        Some("json_schema") => ResponseFormat::JsonSchema {
            name: f
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("response")
                .to_string(),
            description: f
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_string),
            schema: f
                .get("schema")
                .cloned()
                .ok_or_else(|| err("json_schema formats need a schema", "text.format.schema"))?,
            strict: f.get("strict").and_then(Value::as_bool),
        },
        _ => {
            return Err(err(
                "text.format.type must be text, json_object or json_schema",
                "text.format.type",
            ))
        }
    }))
}

/// `input` as a list of items; a string is one user message.
fn normalise_input(input: Option<Value>) -> Result<Vec<Value>, RequestError> {
    match input {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![json!({
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": s}],
        })]),
        Some(Value::Array(a)) => Ok(a
            .into_iter()
            .map(|mut item| {
                // Easy-input messages (`{role, content}`) get their type, and string content
                // becomes one text part, so stored and listed items have one shape.
                if let Value::Object(o) = &mut item {
                    if !o.contains_key("type") && o.contains_key("role") {
                        o.insert("type".into(), json!("message"));
                    }
                    if o.get("type").and_then(Value::as_str) == Some("message") {
                        if let Some(Value::String(s)) = o.get("content") {
                            let assistant =
                                o.get("role").and_then(Value::as_str) == Some("assistant");
                            let kind = if assistant {
                                "output_text"
                            } else {
                                "input_text"
                            };
                            let part = json!([{"type": kind, "text": s}]);
                            o.insert("content".into(), part);
                        }
                    }
                }
                item
            })
            .collect()),
        Some(_) => Err(err(
            "input must be a string or an array of input items",
            "input",
        )),
    }
}

/// The chat messages for a conversation: `instructions` (as a system message) first, then
/// the items in order. Function calls join the assistant turn before them; reasoning items
/// carry over as the next assistant turn's thinking.
pub fn messages_for(
    instructions: Option<&str>,
    history: &[Value],
    items: &[Value],
) -> Result<Vec<Message>, RequestError> {
    let mut out = Vec::new();
    if let Some(i) = instructions.filter(|i| !i.is_empty()) {
        out.push(Message::new(Role::System, vec![Part::text(i)]));
    }
    out.extend(items_to_messages(history, "previous_response_id")?);
    out.extend(items_to_messages(items, "input")?);
    Ok(out)
}

fn items_to_messages(items: &[Value], what: &str) -> Result<Vec<Message>, RequestError> {
    let mut out: Vec<Message> = Vec::new();
    let mut thinking: Vec<Thinking> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = |f: &str| format!("{what}[{i}]{f}");
        let kind = item.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "message" => {
                let role = match item.get("role").and_then(Value::as_str) {
                    Some("user") => Role::User,
                    Some("assistant") => Role::Assistant,
                    Some("system" | "developer") => Role::System,
                    other => {
                        return Err(err(
                            format!(
                                "Invalid role '{}' (expected user, assistant, system or developer)",
                                other.unwrap_or("")
                            ),
                            &at(".role"),
                        ))
                    }
                };
                let content = decode_parts(item.get("content"), &at(".content"))?;
                let mut m = Message::new(role, content);
                if role == Role::Assistant {
                    m.thinking = std::mem::take(&mut thinking);
                    // A text turn right after tool calls of the same turn stays separate.
                }
                out.push(m);
            }
            "function_call" => {
                let s = |k: &str| item.get(k).and_then(Value::as_str).map(str::to_string);
                let call = ToolCall {
                    id: s("call_id").ok_or_else(|| {
                        err("function_call items need a call_id", &at(".call_id"))
                    })?,
                    name: s("name")
                        .ok_or_else(|| err("function_call items need a name", &at(".name")))?,
                    arguments: s("arguments").unwrap_or_default(),
                };
                match out.last_mut() {
                    Some(m) if m.role == Role::Assistant && thinking.is_empty() => {
                        m.tool_calls.push(call);
                    }
                    _ => {
                        let mut m = Message::new(Role::Assistant, Vec::new());
                        m.thinking = std::mem::take(&mut thinking);
                        m.tool_calls.push(call);
                        out.push(m);
                    }
                }
            }
            "function_call_output" => {
                let call_id = item
                    .get("call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        err("function_call_output items need a call_id", &at(".call_id"))
                    })?;
                let content = match item.get("output") {
                    Some(Value::String(s)) => vec![Part::text(s.clone())],
                    Some(v @ Value::Array(_)) => decode_parts(Some(v), &at(".output"))?,
                    _ => {
                        return Err(err(
                            "function_call_output items need an output string",
                            &at(".output"),
                        ))
                    }
                };
                let mut m = Message::new(Role::Tool, content);
                m.tool_call_id = Some(call_id.to_string());
                out.push(m);
            }
            "reasoning" => {
                // Kept only as the next assistant turn's thinking; providers that cannot take
                // it back drop it.
                let mut text = String::new();
                for key in ["content", "summary"] {
                    for p in item.get(key).and_then(Value::as_array).into_iter().flatten() {
                        if let Some(t) = p.get("text").and_then(Value::as_str) {
                            text.push_str(t);
                        }
                    }
                    if !text.is_empty() {
                        break;
                    }
                }
                let encrypted = item.get("encrypted_content").and_then(Value::as_str);
                if let Some(d) = encrypted.and_then(|e| e.strip_prefix(super::encode::REDACTED)) {
                    thinking.push(Thinking {
                        text: String::new(),
                        signature: None,
                        redacted: Some(d.to_string()),
                    });
                    continue;
                }
                // OpenAI's own encrypted reasoning (a Fernet token) is only for OpenAI.
                let signature = encrypted.map(|e| {
                    if e.starts_with("gAAAAA") {
                        crate::canonical::signature::tag("openai", e)
                    } else {
                        e.to_string()
                    }
                });
                if !text.is_empty() || signature.is_some() {
                    thinking.push(Thinking {
                        text,
                        signature,
                        redacted: None,
                    });
                }
            }
            "item_reference" => {
                return Err(err(
                    "item_reference items are not supported; send the item itself or use previous_response_id",
                    &at(".type"),
                ))
            }
            "" => return Err(err("input items need a type", &at(".type"))),
            other => {
                return Err(err(
                    format!("Input items of type '{other}' are not supported (message, function_call, function_call_output and reasoning are)"),
                    &at(".type"),
                ))
            }
        }
    }
    Ok(out)
}

fn decode_parts(content: Option<&Value>, at: &str) -> Result<Vec<Part>, RequestError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![Part::text(s.clone())]),
        Some(Value::Array(parts)) => {
            let mut out = Vec::with_capacity(parts.len());
            for (j, p) in parts.iter().enumerate() {
                let kind = p.get("type").and_then(Value::as_str).unwrap_or("");
                match kind {
                    "input_text" | "output_text" | "text" | "summary_text" | "reasoning_text" => {
                        out.push(Part::text(
                            p.get("text").and_then(Value::as_str).unwrap_or_default(),
                        ));
                    }
                    "refusal" => out.push(Part::text(
                        p.get("refusal").and_then(Value::as_str).unwrap_or_default(),
                    )),
                    "input_image" => {
                        match p.get("image_url").and_then(Value::as_str) {
                            Some(url) => out.push(Part::Image(Image::from_url(url))),
                            None => return Err(err(
                                "input_image parts need an image_url (file_id is not supported)",
                                &format!("{at}[{j}].image_url"),
                            )),
                        }
                    }
                    "input_file" => {
                        let mut file = Map::new();
                        for k in ["file_data", "file_id", "filename"] {
                            if let Some(v) = p.get(k) {
                                file.insert(k.into(), v.clone());
                            }
                        }
                        if let Some(url) = p.get("file_url") {
                            return Err(err(
                                format!("input_file parts with a file_url ({url}) are not supported; send file_data"),
                                &format!("{at}[{j}].file_url"),
                            ));
                        }
                        out.push(Part::Other(json!({"type": "file", "file": file})));
                    }
                    "" => return Err(err("content parts need a type", &format!("{at}[{j}].type"))),
                    other => {
                        return Err(err(
                            format!("Content parts of type '{other}' are not supported"),
                            &format!("{at}[{j}].type"),
                        ))
                    }
                }
            }
            Ok(out)
        }
        Some(_) => Err(err("content must be a string or an array of parts", at)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn decodes_items_tools_and_settings() {
        let d = decode(
            br#"{"model":"m","instructions":"be brief","input":[
                {"role":"user","content":"hi"},
                {"type":"message","role":"assistant","content":[{"type":"output_text","text":"hello"}]},
                {"type":"function_call","call_id":"c1","name":"f","arguments":"{}"},
                {"type":"function_call_output","call_id":"c1","output":"42"},
                {"role":"developer","content":[{"type":"input_text","text":"dev"},
                  {"type":"input_image","image_url":"https://x/y.png"}]}],
              "tools":[{"type":"function","name":"f","parameters":{"type":"object"},"strict":true}],
              "tool_choice":{"type":"function","name":"f"},
              "max_output_tokens":50,"text":{"format":{"type":"json_schema","name":"a","schema":{"type":"object"}}},
              "reasoning":{"effort":"low"},"stream":true,"store":false,"include":["x"],
              "metadata":{"k":"v"}}"#,
        )
        .unwrap();
        let msgs = messages_for(d.instructions.as_deref(), &[], &d.items).unwrap();
        assert_eq!(msgs.len(), 5);
        assert_eq!(msgs[0].role, Role::System);
        assert_eq!(msgs[2].role, Role::Assistant);
        assert_eq!(msgs[2].text(), "hello");
        assert_eq!(msgs[2].tool_calls[0].id, "c1");
        assert_eq!(msgs[3].tool_call_id.as_deref(), Some("c1"));
        assert_eq!(msgs[4].role, Role::System);
        assert!(matches!(msgs[4].content[1], Part::Image(Image::Url(_))));
        assert_eq!(d.chat.tool_choice, Some(ToolChoice::Named("f".into())));
        assert_eq!(d.chat.max_tokens, Some(50));
        assert!(matches!(
            d.chat.response_format,
            Some(ResponseFormat::JsonSchema { .. })
        ));
        assert_eq!(d.chat.reasoning_effort.as_deref(), Some("low"));
        assert!(d.chat.stream && d.chat.include_usage && !d.store);
        assert_eq!(d.echo["metadata"], json!({"k": "v"}));
        // Normalised: easy messages get a type and text parts.
        assert_eq!(d.items[0]["type"], "message");
        assert_eq!(d.items[0]["content"][0]["type"], "input_text");
    }

    #[test]
    fn refusals_name_the_field() {
        let e =
            decode(br#"{"model":"m","input":"x","tools":[{"type":"web_search"}]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tools[0].type"));
        assert!(e.message.contains("web_search"), "{}", e.message);
        let e = decode(br#"{"model":"m","input":[{"role":"robot","content":"x"}]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("input[0].role"));
        let e = decode(br#"{"model":"m","input":"x","frobnicate":1}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("frobnicate"));
        let e = decode(br#"{"input":"x"}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("model"));
        let e = decode(br#"{"model":"m","input":[{"type":"function_call_output","output":"x"}]}"#)
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("input[0].call_id"));
    }

    #[test]
    fn history_comes_before_the_new_input() {
        let d = decode(br#"{"model":"m","input":"second"}"#).unwrap();
        let history = vec![
            json!({"type":"message","role":"user","content":[{"type":"input_text","text":"first"}]}),
            json!({"type":"reasoning","id":"rs_1","summary":[],"content":[{"type":"reasoning_text","text":"hmm"}]}),
            json!({"type":"message","role":"assistant","content":[{"type":"output_text","text":"one"}]}),
        ];
        let msgs = messages_for(Some("sys"), &history, &d.items).unwrap();
        let texts: Vec<String> = msgs.iter().map(Message::text).collect();
        assert_eq!(texts, ["sys", "first", "one", "second"]);
        assert_eq!(msgs[2].thinking[0].text, "hmm");
    }
}
