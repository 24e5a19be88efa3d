#![no_main]
//! See `kcpvpn_fuzz::mss_clamp`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| kcpvpn_fuzz::mss_clamp::run(data));
