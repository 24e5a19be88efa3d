#![no_main]
//! See `kcpvpn_fuzz::kcp_input`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| kcpvpn_fuzz::kcp_input::run(data));
