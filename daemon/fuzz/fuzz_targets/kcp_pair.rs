#![no_main]
//! See `kcpvpn_fuzz::kcp_pair`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| kcpvpn_fuzz::kcp_pair::run(data));
