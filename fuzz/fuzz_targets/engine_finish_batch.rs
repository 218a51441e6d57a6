//! cargo-fuzz target `engine_finish_batch`: see `flowork_gateway::fuzzing::engine_finish_batch`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flowork_gateway::fuzzing::engine_finish_batch(data));
