#![no_main]
//! The request translators: any body that parses as an OpenAI request must encode for every
//! provider (or be refused with an error), never panic.
use libfuzzer_sys::fuzz_target;
use sluice::canonical::openai::{decode_request, encode_request};
use sluice::providers::anthropic::Anthropic;
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
    let _ = Cohere.encode(&req);
    let _ = Ollama.encode(&req);
});
