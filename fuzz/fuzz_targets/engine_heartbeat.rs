//! cargo-fuzz target `engine_heartbeat`: see `flowork_gateway::fuzzing::engine_heartbeat`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flowork_gateway::fuzzing::engine_heartbeat(data));
