//! cargo-fuzz target `job_body`: see `flowork_gateway::fuzzing::job_body`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flowork_gateway::fuzzing::job_body(data));
