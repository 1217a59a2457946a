#![no_main]
//! Anthropic SSE decoder: any bytes, split anywhere, never panic.
use libfuzzer_sys::fuzz_target;
use sluice::providers::anthropic::AnthropicStream;
use sluice::providers::native::DecodeCtx;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let mut d = AnthropicStream::new(DecodeCtx {
        model: "m".into(),
        json_tool: Some("json_response".into()),
    });
    common::feed_in_chunks(data, &mut d);
});
