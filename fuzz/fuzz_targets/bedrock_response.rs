#![no_main]
//! Bedrock Converse answers, errors, embeddings: never panic. The body is `sluice::fuzzing::bedrock_response`, shared with tests/fuzz_smoke.rs.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sluice::fuzzing::bedrock_response(data));
