#![no_main]
//! Gemini and Vertex JSON answers (a response or a chunk array), embeddings answers and
//! error bodies: never panic.
use libfuzzer_sys::fuzz_target;
use sluice::providers::gemini::vertex::Vertex;
use sluice::providers::gemini::{decode_embeddings, decode_response, map_error};
use sluice::providers::native::{Codec, DecodeCtx};

fuzz_target!(|data: &[u8]| {
    let ctx = DecodeCtx {
        model: "gemini".into(),
        json_tool: Some("3".into()),
    };
    let _ = decode_response(data, &ctx);
    let _ = decode_embeddings(data, &ctx);
    let _ = map_error(http::StatusCode::TOO_MANY_REQUESTS, data);
    let v = Vertex::new("p", "us-central1", 4096);
    let _ = v.decode_embeddings(data, &ctx);
    let _ = v.error(http::StatusCode::BAD_REQUEST, data);
});
