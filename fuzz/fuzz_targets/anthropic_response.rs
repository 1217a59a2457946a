#![no_main]
//! Anthropic Messages answers and error bodies: never panic. The body is `sluice::fuzzing::anthropic_response`, shared with tests/fuzz_smoke.rs.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sluice::fuzzing::anthropic_response(data));
