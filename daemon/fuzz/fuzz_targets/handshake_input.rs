#![no_main]
//! See `kcpvpn_fuzz::handshake_input`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| kcpvpn_fuzz::handshake_input::run(data));
