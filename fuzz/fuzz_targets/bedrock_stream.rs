#![no_main]
//! Bedrock ConverseStream decoder (binary AWS event-stream frames), split anywhere: never panic. The body is `sluice::fuzzing::bedrock_stream`, shared with tests/fuzz_smoke.rs.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sluice::fuzzing::bedrock_stream(data));
