#![no_main]
//! See `kcpvpn_fuzz::fec_input`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| kcpvpn_fuzz::fec_input::run(data));
