#![no_main]
//! Ollama NDJSON decoder, split anywhere: never panic. The body is `sluice::fuzzing::ollama_stream`, shared with tests/fuzz_smoke.rs.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sluice::fuzzing::ollama_stream(data));
