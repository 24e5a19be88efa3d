#![no_main]
//! See `kcpvpn_fuzz::endpoint_input`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| kcpvpn_fuzz::endpoint_input::run(data));
