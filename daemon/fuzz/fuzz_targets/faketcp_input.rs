#![no_main]
//! See `kcpvpn_fuzz::faketcp_input`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| kcpvpn_fuzz::faketcp_input::run(data));
