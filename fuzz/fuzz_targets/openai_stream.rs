#![no_main]
//! OpenAI chunk SSE decoder (and the Mistral content-parts adapter), split anywhere: never panic. The body is `sluice::fuzzing::openai_stream`, shared with tests/fuzz_smoke.rs.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sluice::fuzzing::openai_stream(data));
