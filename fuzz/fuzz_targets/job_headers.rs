//! cargo-fuzz target `job_headers`: see `flowork_gateway::fuzzing::job_headers`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flowork_gateway::fuzzing::job_headers(data));
