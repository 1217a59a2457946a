#![no_main]
//! Anthropic SSE decoder: any bytes, split anywhere: never panic. The body is `sluice::fuzzing::anthropic_stream`, shared with tests/fuzz_smoke.rs.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sluice::fuzzing::anthropic_stream(data));
