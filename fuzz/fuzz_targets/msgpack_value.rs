//! cargo-fuzz target: see [`hornbeam_fuzz::msgpack_value`] for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hornbeam_fuzz::msgpack_value::check(data));
