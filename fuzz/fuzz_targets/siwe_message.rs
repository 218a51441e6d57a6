//! cargo-fuzz target `siwe_message`: see `flowork_gateway::fuzzing::siwe_message`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flowork_gateway::fuzzing::siwe_message(data));
