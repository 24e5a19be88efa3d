#![no_main]
//! See `kcpvpn_fuzz::rekey_messages`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| kcpvpn_fuzz::rekey_messages::run(data));
