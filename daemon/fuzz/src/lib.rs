//! The fuzz targets' bodies, one module per target: `fuzz_targets/NAME.rs`
//! hands libFuzzer's input to `NAME::run`, and `tests/corpus.rs` replays
//! the committed corpus (`corpus/NAME/`) through the same functions, so a
//! regression shows in `cargo test` without libFuzzer or a nightly compiler.
pub mod endpoint_input;
pub mod faketcp_input;
pub mod fec_groups;
pub mod fec_input;
pub mod handshake_input;
pub mod identity_handshake;
pub mod kcp_input;
pub mod kcp_pair;
pub mod mss_clamp;
pub mod packet_open;
pub mod rekey_messages;
pub mod session_pipeline;
pub mod tun_offload;

pub type Target = (&'static str, fn(&[u8]));

/// Every target: its name (the directory of its corpus) and its body.
pub const TARGETS: &[Target] = &[
    ("endpoint_input", endpoint_input::run),
    ("faketcp_input", faketcp_input::run),
    ("fec_groups", fec_groups::run),
    ("fec_input", fec_input::run),
    ("handshake_input", handshake_input::run),
    ("identity_handshake", identity_handshake::run),
    ("kcp_input", kcp_input::run),
    ("kcp_pair", kcp_pair::run),
    ("mss_clamp", mss_clamp::run),
    ("packet_open", packet_open::run),
    ("rekey_messages", rekey_messages::run),
    ("session_pipeline", session_pipeline::run),
    ("tun_offload", tun_offload::run),
];

/// `a` is before `b` in wrapping u32 time or sequence space.
pub(crate) fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// The body of test message `id` of `len` bytes: the id, then bytes that
/// depend on it and on the position, so a message that is cut, shifted or
/// mixed with another one does not check out.
pub(crate) fn pattern(id: u32, len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len)
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(id) as u8)
        .collect();
    let n = len.min(4);
    v[..n].copy_from_slice(&id.to_le_bytes()[..n]);
    v
}

/// The id of a test message whose body starts at `at` (None if too short).
pub(crate) fn id_of(m: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(m.get(at..at + 4)?.try_into().ok()?))
}

/// FEC shard counts (data, parity) from input bytes, at most 32 + 16.
/// Under the fuzzer's instrumentation Reed-Solomon costs ~30 times what it
/// does natively, and its matrix inversions grow with the cube of the data
/// shards (5.5 s to build a 255 + 1 codec), so large groups come from
/// [`WIDE_FEC`], built once per process, and the largest data counts are
/// run natively by tests/corpus.rs.
pub(crate) fn fec_counts(d: u8, p: u8) -> (usize, usize) {
    (1 + d as usize % 32, 1 + p as usize % 16)
}

/// Groups of up to GF(2^8)'s 256 shards with at most 96 data shards.
pub(crate) const WIDE_FEC: [(usize, usize); 4] = [(1, 255), (32, 224), (64, 192), (96, 160)];
