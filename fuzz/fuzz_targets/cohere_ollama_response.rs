#![no_main]
//! Cohere and Ollama answers, errors, embeddings: never panic. The body is `sluice::fuzzing::cohere_ollama_response`, shared with tests/fuzz_smoke.rs.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sluice::fuzzing::cohere_ollama_response(data));
