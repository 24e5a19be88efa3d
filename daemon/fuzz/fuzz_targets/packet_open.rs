#![no_main]
//! Arbitrary datagrams into the packet opener (fixed key, every cipher
//! kind). The first byte picks the cipher; the rest is split into datagrams
//! fed in sequence so the replay window sees varied counters. Also checks
//! that what a genuine sealer produces always opens.
use kcpvpn_crypto::packet::{peek_header, CipherKind, Opener, Sealer, MSG_DATA};
use libfuzzer_sys::fuzz_target;

const KEY: [u8; 32] = [0x11; 32];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let kind = CipherKind::ALL[sel as usize % CipherKind::ALL.len()];
    let mut opener = Opener::new(kind, &KEY);
    let mut buf = Vec::new();
    // Chunks separated by 0xFF bytes, so one input is a sequence of datagrams.
    for chunk in rest.split(|&b| b == 0xFF) {
        buf.clear();
        buf.extend_from_slice(chunk);
        let hdr = peek_header(&buf);
        if let Ok(o) = opener.open_in_place(&mut buf) {
            // Only `none` can open forged input; then the header must agree.
            assert_eq!(kind, CipherKind::None);
            let h = hdr.expect("an opened datagram has a valid header");
            assert_eq!((o.msg_type, o.counter), (h.msg_type, h.counter));
        }
    }
    // A genuine datagram with the input as payload must round-trip.
    let mut sealer = Sealer::new(kind, &KEY, 7);
    sealer.set_counter_for_testing(u64::from(sel) << 40);
    let mut d = Vec::new();
    sealer.seal_into(MSG_DATA, rest, &mut d).unwrap();
    let mut fresh = Opener::new(kind, &KEY);
    assert_eq!(fresh.open_in_place(&mut d).unwrap().payload, rest);
});
