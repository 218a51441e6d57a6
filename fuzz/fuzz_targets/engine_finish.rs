//! cargo-fuzz target `engine_finish`: see `flowork_gateway::fuzzing::engine_finish`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flowork_gateway::fuzzing::engine_finish(data));
