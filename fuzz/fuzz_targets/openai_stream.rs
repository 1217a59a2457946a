#![no_main]
//! OpenAI chunk SSE decoder: any bytes, split anywhere, never panic.
use libfuzzer_sys::fuzz_target;
use sluice::canonical::openai::OpenAiStream;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let mut d = OpenAiStream::default();
    common::feed_in_chunks(data, &mut d);
});
