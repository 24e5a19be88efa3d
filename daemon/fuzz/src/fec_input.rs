//! Arbitrary bytes into `FecDecoder::input`, several shards per input.
//!
//! Input layout: byte 0 picks the data shard count, byte 1 the parity shard
//! count, byte 2 the window; then shards, each a 2-byte little-endian length
//! (mod 2048) and that many bytes. Only invariants are checked: no panic,
//! every call returns, nothing delivered is longer than a shard could carry,
//! and the counters add up.
use kcpvpn_fec::{FecDecoder, OVERHEAD};

pub fn run(data: &[u8]) {
    if data.len() < 3 {
        return;
    }
    let ds = 1 + data[0] as usize % 16;
    let ps = 1 + data[1] as usize % 8;
    let window = 1 + data[2] as usize % 8;
    let mut dec = FecDecoder::new(ds, ps, window);
    let mut rest = &data[3..];
    let mut errors = 0u64;
    let mut delivered = 0u64;
    let mut longest = 0usize;
    while rest.len() >= 2 {
        let len = (u16::from_le_bytes([rest[0], rest[1]]) as usize % 2048).min(rest.len() - 2);
        let shard = &rest[2..2 + len];
        rest = &rest[2 + len..];
        longest = longest.max(len);
        let r = dec.input(shard, &mut |d| {
            assert!(d.len() + OVERHEAD <= longest.max(OVERHEAD));
            delivered += 1;
        });
        errors += r.is_err() as u64;
    }
    let s = dec.stats();
    assert!(s.malformed >= errors);
    assert_eq!(s.delivered, delivered);
    assert!(s.recovered <= s.delivered);
}
