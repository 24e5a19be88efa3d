//! Arbitrary datagrams into the packet opener (fixed key, every cipher
//! kind). The first byte picks the cipher; the rest is split into datagrams
//! fed in sequence so the replay window sees varied counters. Also checks
//! that what a genuine sealer produces always opens, and feeds the chunks
//! as genuine feedback reports (adaptive FEC, protocol section 6.7) to a
//! session: they are refused or adapt the parity, never out of its bounds.
use kcpvpn_crypto::packet::{peek_header, CipherKind, Opener, Sealer, MSG_DATA, MSG_FEEDBACK};
use kcpvpn_kcp::KcpConfig;
use kcpvpn_tunnel::session::{
    decode_feedback, encode_feedback, Received, Session, SessionConfig, FEEDBACK_LEN,
};

const KEY: [u8; 32] = [0x11; 32];

pub fn run(data: &[u8]) {
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

    // Feedback plaintext: decodes to a consistent report or is refused.
    if let Some((expected, lost)) = decode_feedback(rest) {
        assert!(lost <= expected);
        assert_eq!(encode_feedback(expected, lost)[..], rest[..FEEDBACK_LEN]);
    }
    let cfg = SessionConfig {
        kcp: KcpConfig::profile("fast").unwrap(),
        fec_send: Some((10, 3)),
        fec_recv: Some((10, 3)),
        rapid_fec: true,
        cipher: kind,
        keepalive_ms: 0,
        idle_timeout_ms: 0,
        udp_mtu: 1350,
        send_buffer_bytes: 1 << 20,
        max_packet: 1500,
        mss_clamp_mtu: None,
        ethernet: false,
        flow_queueing: true,
        rekey_interval_ms: 0,
    };
    let mut session = Session::new(cfg, 1, &[0x22; 32], &KEY, 7, 0).unwrap();
    let mut peer = Sealer::new(kind, &KEY, 7);
    for (i, chunk) in rest.split(|&b| b == 0xFF).enumerate() {
        peer.seal_into(MSG_FEEDBACK, chunk, &mut d).unwrap();
        let got = session.input(&mut d, i as u32, &mut |_p: &[u8]| {
            panic!("feedback delivered as a packet")
        });
        assert_eq!(got == Received::Feedback, decode_feedback(chunk).is_some());
        assert!(session.stats.fec_parity <= 3.0);
    }
}
