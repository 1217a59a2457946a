#![no_main]
//! the gateway's request parsing (chat / embeddings peek, full decode): never panic. The body is `sluice::fuzzing::request_parser`, shared with tests/fuzz_smoke.rs.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sluice::fuzzing::request_parser(data));
