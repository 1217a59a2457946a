#![no_main]
//! content rules on any text (folding, offset map, detectors, redaction): never panic. The body is `sluice::fuzzing::content_scan`, shared with tests/fuzz_smoke.rs.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sluice::fuzzing::content_scan(data));
