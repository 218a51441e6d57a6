//! cargo-fuzz target `engine_claim`: see `flowork_gateway::fuzzing::engine_claim`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flowork_gateway::fuzzing::engine_claim(data));
