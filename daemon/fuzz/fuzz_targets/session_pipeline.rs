#![no_main]
//! See `kcpvpn_fuzz::session_pipeline`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| kcpvpn_fuzz::session_pipeline::run(data));
