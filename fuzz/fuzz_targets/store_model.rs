//! cargo-fuzz target: see [`hornbeam_fuzz::store_model`] for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hornbeam_fuzz::store_model::check(data));
