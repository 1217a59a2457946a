//! Reads only what the gateway needs from an OpenAI request body (model, stream, usage
//! options) without building it: the passthrough path forwards everything else byte-for-byte.

use crate::error::ApiError;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::ops::Range;

/// What we know about an inbound request body.
#[derive(Debug)]
pub struct Peek<'a> {
    pub model: Cow<'a, str>,
    /// Byte range of the `model` value (quotes included) in the body.
    pub model_span: Range<usize>,
    pub stream: bool,
    /// `stream_options.include_usage` as the client sent it.
    pub include_usage: Option<bool>,
    /// Byte range of the `stream_options` value, if present and an object.
    pub stream_options_span: Option<Range<usize>>,
    /// The request's own output limit (`max_completion_tokens`, `max_tokens` or
    /// `max_output_tokens`): an integer, an integral float or a numeric string.
    pub max_tokens: Option<u64>,
    /// Which field the limit came from, and the byte range of its value (for `cap_output`).
    pub max_tokens_field: Option<(&'static str, Range<usize>)>,
    /// Size of the prompt in bytes, for the token estimate: for chat, the whole body
    /// (messages, system, tools, tool results, response_format) less inline image data.
    pub prompt_bytes: usize,
    /// Images in the prompt (each reserved at [`IMAGE_TOKENS`]).
    pub images: u32,
}

/// Tokens reserved per image: the most any provider documents for one image (Anthropic,
/// ~1,600 for a 1.15-megapixel image; OpenAI high detail at most 1,445; Gemini 258).
pub const IMAGE_TOKENS: u64 = 1600;

impl Peek<'_> {
    /// The same facts without borrowing the body (the model name is copied).
    pub fn into_owned(self) -> Peek<'static> {
        Peek {
            model: Cow::Owned(self.model.into_owned()),
            model_span: self.model_span,
            stream: self.stream,
            include_usage: self.include_usage,
            stream_options_span: self.stream_options_span,
            max_tokens: self.max_tokens,
            max_tokens_field: self.max_tokens_field,
            prompt_bytes: self.prompt_bytes,
            images: self.images,
        }
    }
}

#[derive(Deserialize)]
struct ChatFields<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    #[serde(borrow)]
    messages: Option<&'a RawValue>,
    /// Responses bodies.
    #[serde(borrow)]
    input: Option<&'a RawValue>,
    #[serde(borrow)]
    stream: Option<&'a RawValue>,
    #[serde(borrow)]
    stream_options: Option<&'a RawValue>,
    #[serde(borrow)]
    max_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    max_completion_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    max_output_tokens: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct EmbeddingFields<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    #[serde(borrow)]
    input: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

/// `POST /v1/chat/completions`.
pub fn chat(body: &[u8]) -> Result<Peek<'_>, ApiError> {
    let text = utf8(body)?;
    let f: ChatFields<'_> = parse(text)?;
    let (model, model_span) = model(text, f.model)?;
    let messages = f.messages.ok_or_else(|| {
        ApiError::bad_request("missing required field `messages`", Some("messages"))
    })?;
    let items: Vec<&RawValue> = serde_json::from_str(messages.get()).map_err(|_| {
        ApiError::bad_request(
            "`messages` must be an array of message objects",
            Some("messages"),
        )
    })?;
    if items.is_empty() {
        return Err(ApiError::bad_request(
            "`messages` must contain at least one message",
            Some("messages"),
        ));
    }
    if let Some(i) = items.iter().position(|m| !m.get().starts_with('{')) {
        return Err(ApiError::bad_request(
            format!("`messages[{i}]` must be an object with a `role`"),
            Some("messages"),
        ));
    }
    generation(body, text, &f, model, model_span)
}

/// A Responses body (`input` instead of `messages`), for the passthrough to providers that
/// implement `/v1/responses` themselves.
pub fn responses(body: &[u8]) -> Result<Peek<'_>, ApiError> {
    let text = utf8(body)?;
    let f: ChatFields<'_> = parse(text)?;
    let (model, model_span) = model(text, f.model)?;
    match f.input.map(RawValue::get) {
        Some(i) if i.starts_with('"') || i.starts_with('[') => {}
        _ => {
            return Err(ApiError::bad_request(
                "`input` must be a string or an array of input items",
                Some("input"),
            ))
        }
    }
    generation(body, text, &f, model, model_span)
}

/// The fields of a chat-like body besides its prompt: stream, stream options, output limit.
fn generation<'a>(
    body: &'a [u8],
    text: &'a str,
    f: &ChatFields<'a>,
    model: Cow<'a, str>,
    model_span: Range<usize>,
) -> Result<Peek<'a>, ApiError> {
    let stream = match f.stream.map(RawValue::get) {
        None | Some("false" | "null") => false,
        Some("true") => true,
        Some(_) => {
            return Err(ApiError::bad_request(
                "`stream` must be a boolean",
                Some("stream"),
            ));
        }
    };
    let (include_usage, stream_options_span) = match f.stream_options {
        None => (None, None),
        Some(raw) if raw.get() == "null" => (None, None),
        Some(raw) => {
            if !raw.get().starts_with('{') {
                return Err(ApiError::bad_request(
                    "`stream_options` must be an object",
                    Some("stream_options"),
                ));
            }
            let so: StreamOptions = serde_json::from_str(raw.get()).map_err(|_| {
                ApiError::bad_request(
                    "`stream_options.include_usage` must be a boolean",
                    Some("stream_options.include_usage"),
                )
            })?;
            (so.include_usage, Some(span(text, raw.get())))
        }
    };
    let limit_field = [
        ("max_completion_tokens", f.max_completion_tokens),
        ("max_tokens", f.max_tokens),
        ("max_output_tokens", f.max_output_tokens),
    ]
    .into_iter()
    .find_map(|(name, v)| v.filter(|v| v.get() != "null").map(|v| (name, v)));
    let (max_tokens, max_tokens_field) = match limit_field {
        Some((name, raw)) => (
            Some(output_limit(name, raw.get())?),
            Some((name, span(text, raw.get()))),
        ),
        None => (None, None),
    };
    let (inline_bytes, images) = image_weight(body);
    Ok(Peek {
        model,
        model_span,
        stream,
        include_usage,
        stream_options_span,
        max_tokens,
        max_tokens_field,
        prompt_bytes: body.len().saturating_sub(inline_bytes),
        images,
    })
}

/// `POST /v1/embeddings`.
pub fn embeddings(body: &[u8]) -> Result<Peek<'_>, ApiError> {
    let text = utf8(body)?;
    let f: EmbeddingFields<'_> = parse(text)?;
    let (model, model_span) = model(text, f.model)?;
    let prompt_bytes = f.input.map_or(0, |i| i.get().len());
    match f.input.map(RawValue::get) {
        None | Some("null") => {
            return Err(ApiError::bad_request(
                "missing required field `input`",
                Some("input"),
            ))
        }
        Some(s) if !(s.starts_with('"') || s.starts_with('[')) => {
            return Err(ApiError::bad_request(
                "`input` must be a string, an array of strings, or an array of token arrays",
                Some("input"),
            ))
        }
        Some(_) => {}
    }
    Ok(Peek {
        model,
        model_span,
        stream: false,
        include_usage: None,
        stream_options_span: None,
        max_tokens: Some(0),
        max_tokens_field: None,
        prompt_bytes,
        images: 0,
    })
}

/// An output limit as clients send it: `4096`, `4096.0` or `"4096"`. Anything else (negative,
/// fractional, not a number, beyond u64) is the client's error, naming the field.
fn output_limit(field: &'static str, raw: &str) -> Result<u64, ApiError> {
    let bad = || {
        ApiError::bad_request(
            format!("`{field}` must be a non-negative whole number of tokens, got {raw}"),
            Some(field),
        )
    };
    let text = match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(inner) => inner.trim(),
        None => raw,
    };
    if let Ok(n) = text.parse::<u64>() {
        return Ok(n);
    }
    let f: f64 = text.parse().map_err(|_| bad())?;
    // 2^64 as f64; every integral f64 below it converts exactly.
    if f.is_finite() && f >= 0.0 && f.fract() == 0.0 && f < 18_446_744_073_709_551_616.0 {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "checked integral, non-negative and below 2^64"
        )]
        return Ok(f as u64);
    }
    Err(bad())
}

/// Inline image data (`data:` URLs) is not prompt text: its bytes are left out of the
/// estimate and each image is reserved at [`IMAGE_TOKENS`] instead. Returns the inline bytes
/// and the number of images (`"image_url":` members, inline or linked).
fn image_weight(body: &[u8]) -> (usize, u32) {
    let mut images = 0u32;
    for at in memchr::memmem::find_iter(body, b"\"image_url\"") {
        let rest = body[at + 11..].trim_ascii_start();
        if rest.starts_with(b":") {
            images = images.saturating_add(1);
        }
    }
    let mut inline = 0usize;
    for at in memchr::memmem::find_iter(body, b"\"data:") {
        let start = at + 1;
        if let Some(len) = memchr::memchr(b'"', &body[start..]) {
            inline += len;
        }
    }
    (inline, images)
}

fn utf8(body: &[u8]) -> Result<&str, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "request body is empty; expected a JSON object",
            None,
        ));
    }
    let text = std::str::from_utf8(body).map_err(|e| {
        ApiError::bad_request(
            format!(
                "request body is not valid UTF-8 (invalid byte at offset {})",
                e.valid_up_to()
            ),
            None,
        )
    })?;
    if !text.trim_start().starts_with('{') {
        return Err(ApiError::bad_request(
            "request body must be a JSON object",
            None,
        ));
    }
    Ok(text)
}

/// Deepest nesting accepted, the same as serde_json's own limit for values it builds.
pub const MAX_DEPTH: usize = 128;

fn parse<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, ApiError> {
    let parsed = serde_json::from_str(text).map_err(|e| {
        let msg = e.to_string();
        let message = if msg.contains("recursion limit exceeded") {
            format!("request body is nested too deeply (at most 128 levels): {msg}")
        } else if e.is_data() && msg.starts_with("invalid type") {
            format!("request body must be a JSON object: {msg}")
        } else if e.is_data() && msg.starts_with("duplicate field") {
            format!("invalid request body: {msg}")
        } else {
            format!("request body is not valid JSON: {msg}")
        };
        ApiError::bad_request(message, None)
    })?;
    // Skipped fields are not depth-checked by serde_json, but whoever parses them next is.
    if nesting_exceeds(text.as_bytes(), MAX_DEPTH) {
        return Err(ApiError::bad_request(
            format!("request body is nested too deeply (at most {MAX_DEPTH} levels)"),
            None,
        ));
    }
    Ok(parsed)
}

/// True when arrays/objects nest deeper than `limit` (strings skipped, escapes honoured).
fn nesting_exceeds(b: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b'"' => {
                i += 1;
                loop {
                    let Some(rest) = b.get(i..) else { return false };
                    match memchr::memchr2(b'"', b'\\', rest) {
                        Some(j) if rest[j] == b'\\' => i += j + 2,
                        Some(j) => {
                            i += j + 1;
                            break;
                        }
                        None => return false,
                    }
                }
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    false
}

fn model<'a>(
    text: &'a str,
    raw: Option<&'a RawValue>,
) -> Result<(Cow<'a, str>, Range<usize>), ApiError> {
    let raw =
        raw.ok_or_else(|| ApiError::bad_request("missing required field `model`", Some("model")))?;
    if !raw.get().starts_with('"') {
        return Err(ApiError::bad_request(
            "`model` must be a string",
            Some("model"),
        ));
    }
    let name: Cow<'a, str> = serde_json::from_str(raw.get())
        .map_err(|_| ApiError::bad_request("`model` must be a string", Some("model")))?;
    if name.trim().is_empty() {
        return Err(ApiError::bad_request(
            "`model` must not be empty",
            Some("model"),
        ));
    }
    Ok((name, span(text, raw.get())))
}

/// Where `part` (a slice of `whole`) sits inside `whole`.
fn span(whole: &str, part: &str) -> Range<usize> {
    let start = (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize);
    start..start + part.len()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn err(body: &[u8]) -> String {
        chat(body).unwrap_err().to_string()
    }

    #[test]
    fn reads_fields_and_spans() {
        let body = br#"{ "model" : "gpt-4o", "messages":[{"role":"user","content":"hi"}], "stream":true, "stream_options":{"include_usage":true}, "x_vendor":1}"#;
        let p = chat(body).unwrap();
        assert_eq!(p.model, "gpt-4o");
        assert_eq!(&body[p.model_span.clone()], br#""gpt-4o""#);
        assert!(p.stream);
        assert_eq!(p.include_usage, Some(true));
        assert_eq!(
            &body[p.stream_options_span.unwrap()],
            br#"{"include_usage":true}"#
        );
    }

    #[test]
    fn escaped_model_names_decode() {
        let body = br#"{"model":"a\u002fb","messages":[{"role":"user","content":"x"}]}"#;
        assert_eq!(chat(body).unwrap().model, "a/b");
    }

    #[test]
    fn bad_input_names_the_problem() {
        assert!(err(b"{").contains("not valid JSON"));
        assert!(err(b"").contains("empty"));
        assert!(err(b"[1]").contains("must be a JSON object"));
        assert!(err(b"{\"model\":\"\xff\"}").contains("UTF-8"));
        assert!(err(br#"{"messages":[{"role":"user"}]}"#).contains("`model`"));
        assert!(err(br#"{"model":5,"messages":[{}]}"#).contains("`model` must be a string"));
        assert!(err(br#"{"model":"m"}"#).contains("`messages`"));
        assert!(err(br#"{"model":"m","messages":"hi"}"#).contains("`messages` must be an array"));
        assert!(err(br#"{"model":"m","messages":[]}"#).contains("at least one"));
        assert!(err(br#"{"model":"m","messages":[1]}"#).contains("messages[0]"));
        assert!(err(br#"{"model":"m","messages":[{}],"stream":"yes"}"#)
            .contains("`stream` must be a boolean"));
        assert!(err(br#"{"model":"m","model":"n","messages":[{}]}"#).contains("duplicate field"));
        let deep = format!(
            "{{\"model\":\"m\",\"messages\":[{{}}],\"x\":{}{}}}",
            "[".repeat(5000),
            "]".repeat(5000)
        );
        assert!(err(deep.as_bytes()).contains("nested too deeply"));
        let ok_depth = format!(
            "{{\"model\":\"m\",\"messages\":[{{\"c\":{}{}}}]}}",
            "[".repeat(120),
            "]".repeat(120)
        );
        assert!(chat(ok_depth.as_bytes()).is_ok());
        // Brackets inside strings (with escaped quotes) do not count.
        let in_string = format!(
            "{{\"model\":\"m\",\"messages\":[{{\"c\":\"\\\"{}\"}}]}}",
            "[".repeat(500)
        );
        assert!(chat(in_string.as_bytes()).is_ok(), "{in_string}");
    }
}
