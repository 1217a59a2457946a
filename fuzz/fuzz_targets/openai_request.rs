#![no_main]
//! The request translators: any body that parses as an OpenAI request must encode for every
//! provider (or be refused with an error), never panic.
use libfuzzer_sys::fuzz_target;
use sluice::canonical::openai::{decode_request, encode_request};
use sluice::providers::anthropic::Anthropic;
use sluice::providers::gemini::{vertex::Vertex, Gemini};
use sluice::providers::native::Codec;
use sluice::providers::{cohere::Cohere, ollama::Ollama};

fuzz_target!(|data: &[u8]| {
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
    let _ = Cohere.encode(&req);
    let _ = Ollama.encode(&req);
    let b = sluice::providers::bedrock::Bedrock {
        default_max_tokens: 4096,
    };
    let _ = b.encode(&req);
});
