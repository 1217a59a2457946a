#![no_main]
//! Bedrock ConverseStream decoder (binary AWS event-stream frames): any bytes, split
//! anywhere, never panic, never buffer past the frame limit.
use libfuzzer_sys::fuzz_target;
use sluice::providers::bedrock::ConverseStream;
use sluice::providers::native::DecodeCtx;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let mut d = ConverseStream::new(DecodeCtx {
        model: "m".into(),
        json_tool: Some("json_response".into()),
    });
    common::feed_in_chunks(data, &mut d);
});
