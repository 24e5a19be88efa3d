#![no_main]
//! See `kcpvpn_fuzz::identity_handshake`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| kcpvpn_fuzz::identity_handshake::run(data));
