#![no_main]
//! Bedrock Converse answers, embeddings answers and error bodies: never panic.
use libfuzzer_sys::fuzz_target;
use sluice::providers::bedrock::{decode_converse, map_error, Bedrock};
use sluice::providers::native::{Codec, DecodeCtx};

fuzz_target!(|data: &[u8]| {
    let ctx = DecodeCtx {
        model: "m".into(),
        json_tool: Some("json_response".into()),
    };
    let _ = decode_converse(data, &ctx);
    let _ = map_error(http::StatusCode::TOO_MANY_REQUESTS, data);
    let b = Bedrock {
        default_max_tokens: 4096,
    };
    let _ = b.decode_embeddings(data, &ctx);
    if let Some(Ok(enc)) = b.encode_embeddings(data) {
        let _ = b.decode_embeddings(data, &enc.ctx);
    }
});
