#![no_main]
//! Gemini `streamGenerateContent?alt=sse` decoder: any bytes, split anywhere, never panic.
use libfuzzer_sys::fuzz_target;
use sluice::providers::gemini::GeminiStream;
use sluice::providers::native::DecodeCtx;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let mut d = GeminiStream::new(DecodeCtx {
        model: "gemini".into(),
        json_tool: None,
    });
    common::feed_in_chunks(data, &mut d);
});
