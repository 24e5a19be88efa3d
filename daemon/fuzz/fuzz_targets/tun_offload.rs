#![no_main]
//! See `kcpvpn_fuzz::tun_offload`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| kcpvpn_fuzz::tun_offload::run(data));
