#![no_main]
//! the request translators: OpenAI body -> every provider's body: never panic. The body is `sluice::fuzzing::openai_request`, shared with tests/fuzz_smoke.rs.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sluice::fuzzing::openai_request(data));
