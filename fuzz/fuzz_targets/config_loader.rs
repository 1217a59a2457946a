#![no_main]
//! the config loader (YAML, interpolation, validation): never panic. The body is `sluice::fuzzing::config_loader`, shared with tests/fuzz_smoke.rs.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sluice::fuzzing::config_loader(data));
