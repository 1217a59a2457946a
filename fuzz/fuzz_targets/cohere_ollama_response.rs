#![no_main]
//! Cohere and Ollama JSON answers, error bodies, embeddings requests and answers: never panic.
use libfuzzer_sys::fuzz_target;
use sluice::providers::native::{Codec, DecodeCtx};
use sluice::providers::{cohere, ollama};

fuzz_target!(|data: &[u8]| {
    let ctx = DecodeCtx {
        model: "m".into(),
        json_tool: None,
    };
    let status = http::StatusCode::TOO_MANY_REQUESTS;
    let _ = cohere::Cohere.decode(data, &ctx);
    let _ = cohere::map_error(status, data);
    let _ = cohere::encode_embeddings(data);
    let _ = cohere::decode_embeddings(data, &ctx);
    let _ = ollama::Ollama.decode(data, &ctx);
    let _ = ollama::map_error(status, data);
    let _ = ollama::encode_embeddings(data);
    let _ = ollama::decode_embeddings(data, &ctx);
});
