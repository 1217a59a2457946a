//! The bodies of the fuzz targets, in one place: `fuzz/fuzz_targets/*` (cargo-fuzz, nightly,
//! long runs) and `tests/fuzz_smoke.rs` (a few seconds per target inside `cargo test`, so in
//! `./test.sh`) call the same functions. Each takes arbitrary bytes and must never panic.

use crate::canonical::openai::{decode_request, encode_request, StreamEncoder};
use crate::providers::anthropic::{self, Anthropic, AnthropicStream};
use crate::providers::bedrock::{self, Bedrock, ConverseStream};
use crate::providers::gemini::{self, vertex::Vertex, Gemini, GeminiStream};
use crate::providers::native::{Codec, DecodeCtx, StreamDecoder};
use crate::providers::{cohere, ollama};

/// A target: its name (as in `fuzz/Cargo.toml`) and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] = &[
    ("request_parser", request_parser),
    ("config_loader", config_loader),
    ("content_scan", content_scan),
    ("openai_request", openai_request),
    ("openai_stream", openai_stream),
    ("anthropic_stream", anthropic_stream),
    ("anthropic_response", anthropic_response),
    ("gemini_stream", gemini_stream),
    ("gemini_response", gemini_response),
    ("bedrock_stream", bedrock_stream),
    ("bedrock_response", bedrock_response),
    ("cohere_stream", cohere_stream),
    ("ollama_stream", ollama_stream),
    ("cohere_ollama_response", cohere_ollama_response),
];

fn ctx(model: &str, json_tool: Option<&str>) -> DecodeCtx {
    DecodeCtx {
        model: model.into(),
        json_tool: json_tool.map(Into::into),
    }
}

/// The first byte picks a chunk size so that splits land everywhere; the rest is the
/// stream. What was decoded must re-encode as OpenAI chunks.
fn feed_in_chunks(data: &[u8], d: &mut dyn StreamDecoder) {
    let Some((&k, rest)) = data.split_first() else {
        return;
    };
    let size = usize::from(k % 64) + 1;
    let mut events = Vec::new();
    for chunk in rest.chunks(size) {
        if d.feed(chunk, &mut events).is_err() {
            return;
        }
    }
    let _ = d.finish(&mut events);
    let _ = crate::canonical::ChatResponse::from_events(&events);
    let mut enc = StreamEncoder::new("id".into(), "m".into(), 0, true);
    let mut out = Vec::new();
    for e in &events {
        enc.event(e, &mut out);
    }
    enc.finish(&mut out);
}

/// The gateway's own request parsing: the chat and embeddings peeks every inbound request
/// passes, and the full OpenAI request decoder.
pub fn request_parser(data: &[u8]) {
    let _ = crate::api::openai::peek::chat(data);
    let _ = crate::api::openai::peek::embeddings(data);
    let _ = decode_request(data);
}

/// The config loader: YAML, interpolation, strict validation; errors, never panics.
pub fn config_loader(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    // Some variables exist, some do not: both paths of interpolation run.
    let env = |k: &str| k.starts_with(['A', 'O', 'S']).then(|| format!("v-{k}"));
    let _ = crate::config::from_yaml(&text, &env);
}

/// Content rules on arbitrary text: folding (NFKC, invisible characters) and the offset map
/// back, every built-in detector, redaction; spans must stay on character boundaries.
pub fn content_scan(data: &[u8]) {
    use crate::policy::content::detectors::{Detector, BUILTINS};
    use crate::policy::content::{scan, Action, Rule, Scope, Stage, Vault};
    let text = String::from_utf8_lossy(data);
    let rule = Rule {
        name: "fuzz".into(),
        stage: Stage::Both,
        detectors: BUILTINS
            .iter()
            .filter_map(|b| Detector::builtin(b))
            .collect(),
        action: Action::RedactReversible,
        scope: Scope::default(),
        scan_tools: true,
    };
    // The oracle: a span off a character boundary would panic where redaction slices.
    for f in scan::find(&rule, &text) {
        assert!(f.start <= f.end && text.is_char_boundary(f.start) && text.is_char_boundary(f.end));
    }
    let mut vault = Vault::default();
    if let Some(out) = scan::apply(&rule, &text, &mut vault).rewritten {
        let _ = vault.restore(&out);
    }
}

/// The request translators: a body that parses as an OpenAI request encodes for every
/// provider (or is refused with an error).
pub fn openai_request(data: &[u8]) {
    // Mistral's history rewrite works on the raw body.
    let _ = crate::providers::content_parts::request(bytes::Bytes::copy_from_slice(data));
    let Ok(req) = decode_request(data) else {
        return;
    };
    let _ = encode_request(&req);
    let a = Anthropic {
        default_max_tokens: 4096,
        path: "/v1/messages".into(),
        model_in_body: true,
    };
    let _ = a.encode(&req);
    let _ = Gemini::ai_studio().encode(&req);
    let mut claude = req.clone();
    claude.model = format!("claude-{}", req.model);
    let v = Vertex::new("p", "us-central1", 4096);
    let _ = v.encode(&req);
    let _ = v.encode(&claude);
    let _ = v.encode_embeddings(data);
    let _ = cohere::Cohere.encode(&req);
    let _ = ollama::Ollama.encode(&req);
    let b = Bedrock {
        default_max_tokens: 4096,
    };
    let _ = b.encode(&req);
}

pub fn openai_stream(data: &[u8]) {
    feed_in_chunks(data, &mut crate::canonical::openai::OpenAiStream::default());
    // Mistral's list-shaped content said OpenAI's way: as a stream split anywhere (what
    // comes out must still decode), and as a whole answer.
    if let Some((&k, rest)) = data.split_first() {
        let size = usize::from(k % 64) + 1;
        let out = crate::providers::content_parts::translate_chunks(rest.chunks(size), true);
        let mut events = Vec::new();
        let mut d = crate::canonical::openai::OpenAiStream::default();
        let _ = d.feed(&out, &mut events);
        let _ = crate::providers::content_parts::translate_chunks([rest], false);
    }
}

pub fn anthropic_stream(data: &[u8]) {
    feed_in_chunks(
        data,
        &mut AnthropicStream::new(ctx("m", Some("json_response"))),
    );
}

pub fn anthropic_response(data: &[u8]) {
    let _ = anthropic::decode_message(data, &ctx("m", Some("json_response")));
    let _ = anthropic::map_error(http::StatusCode::BAD_REQUEST, data);
}

pub fn gemini_stream(data: &[u8]) {
    feed_in_chunks(data, &mut GeminiStream::new(ctx("gemini", None)));
}

pub fn gemini_response(data: &[u8]) {
    let c = ctx("gemini", Some("3"));
    let _ = gemini::decode_response(data, &c);
    let _ = gemini::decode_embeddings(data, &c);
    let _ = gemini::map_error(http::StatusCode::TOO_MANY_REQUESTS, data);
    let v = Vertex::new("p", "us-central1", 4096);
    let _ = v.decode_embeddings(data, &c);
    let _ = v.error(http::StatusCode::BAD_REQUEST, data);
}

pub fn bedrock_stream(data: &[u8]) {
    feed_in_chunks(
        data,
        &mut ConverseStream::new(ctx("m", Some("json_response"))),
    );
}

pub fn bedrock_response(data: &[u8]) {
    let c = ctx("m", Some("json_response"));
    let _ = bedrock::decode_converse(data, &c);
    let _ = bedrock::map_error(http::StatusCode::TOO_MANY_REQUESTS, data);
    let b = Bedrock {
        default_max_tokens: 4096,
    };
    let _ = b.decode_embeddings(data, &c);
    if let Some(Ok(enc)) = b.encode_embeddings(data) {
        let _ = b.decode_embeddings(data, &enc.ctx);
    }
}

pub fn cohere_stream(data: &[u8]) {
    feed_in_chunks(data, &mut cohere::CohereStream::new(ctx("m", None)));
}

pub fn ollama_stream(data: &[u8]) {
    feed_in_chunks(data, &mut ollama::OllamaStream::new(ctx("m", None)));
}

pub fn cohere_ollama_response(data: &[u8]) {
    let c = ctx("m", None);
    let status = http::StatusCode::TOO_MANY_REQUESTS;
    let _ = cohere::Cohere.decode(data, &c);
    let _ = cohere::map_error(status, data);
    let _ = cohere::encode_embeddings(data);
    let _ = cohere::decode_embeddings(data, &c);
    let _ = ollama::Ollama.decode(data, &c);
    let _ = ollama::map_error(status, data);
    let _ = ollama::encode_embeddings(data);
    let _ = ollama::decode_embeddings(data, &c);
}
