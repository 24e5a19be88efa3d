#![no_main]
//! See `kcpvpn_fuzz::packet_open`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| kcpvpn_fuzz::packet_open::run(data));
