#![no_main]
//! Gemini / Vertex answers, errors, embeddings: never panic. The body is `sluice::fuzzing::gemini_response`, shared with tests/fuzz_smoke.rs.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sluice::fuzzing::gemini_response(data));
