#![no_main]
//! Cohere v2 SSE decoder: any bytes, split anywhere, never panic.
use libfuzzer_sys::fuzz_target;
use sluice::providers::cohere::CohereStream;
use sluice::providers::native::DecodeCtx;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let mut d = CohereStream::new(DecodeCtx {
        model: "m".into(),
        json_tool: None,
    });
    common::feed_in_chunks(data, &mut d);
});
