#![no_main]
//! Anthropic JSON answers and error bodies: never panic.
use libfuzzer_sys::fuzz_target;
use sluice::providers::anthropic::{decode_message, map_error};
use sluice::providers::native::DecodeCtx;

fuzz_target!(|data: &[u8]| {
    let ctx = DecodeCtx {
        model: "m".into(),
        json_tool: Some("json_response".into()),
    };
    let _ = decode_message(data, &ctx);
    let _ = map_error(http::StatusCode::BAD_REQUEST, data);
});
