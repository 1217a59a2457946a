#![no_main]
//! Ollama NDJSON decoder: any bytes, split anywhere, never panic.
use libfuzzer_sys::fuzz_target;
use sluice::providers::native::DecodeCtx;
use sluice::providers::ollama::OllamaStream;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let mut d = OllamaStream::new(DecodeCtx {
        model: "m".into(),
        json_tool: None,
    });
    common::feed_in_chunks(data, &mut d);
});
