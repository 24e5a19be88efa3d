//! Arbitrary bytes into `Kcp::input`, interleaved with send / flush / recv /
//! update: nothing may panic, every output datagram fits the MTU.
use kcpvpn_kcp::{Kcp, KcpConfig};

const CONV: u32 = 0x4b43_5031;

pub fn run(data: &[u8]) {
    let mut cfg = KcpConfig {
        mtu: 512,
        rcv_wnd: 128,
        ..KcpConfig::default()
    };
    if data.first().is_some_and(|b| b & 1 == 1) {
        cfg.nodelay = true;
        cfg.nc = false;
    }
    let mtu = cfg.mtu;
    let mut k = Kcp::new(CONV, cfg);
    let mut now = 1000u32;
    let mut buf = vec![0u8; 1 << 16];
    let mut check = |d: &[u8]| assert!(d.len() <= mtu && d.len() >= 24);
    // Give the sender side some state for ACK / UNA / probe input to act on.
    for i in 0..20u8 {
        let _ = k.send(&[i; 700]);
    }
    k.flush(now, &mut check);
    // The input is a sequence of chunks: [op, len_lo, len_hi, bytes...].
    let mut rest = data.get(1..).unwrap_or(&[]);
    while rest.len() >= 3 {
        let op = rest[0];
        let len = (u16::from_le_bytes([rest[1], rest[2]]) as usize).min(rest.len() - 3);
        let (chunk, tail) = rest[3..].split_at(len);
        rest = tail;
        now = now.wrapping_add((op >> 3) as u32 * 7);
        let mut d = chunk.to_vec();
        if op & 4 != 0 && d.len() >= 4 {
            d[..4].copy_from_slice(&CONV.to_le_bytes()); // get past the conv check
        }
        let _ = k.input(&d, now);
        match op & 3 {
            0 => k.flush(now, &mut check),
            1 => k.update(now, &mut check),
            2 => {
                while let Some(n) = k.peek_size() {
                    if n > buf.len() {
                        buf.resize(n, 0);
                    }
                    assert_eq!(k.recv(&mut buf), Ok(n), "recv disagrees with peek_size");
                }
            }
            _ => {
                let _ = k.send(chunk);
            }
        }
        let _ = k.check(now);
        let _ = k.stats();
    }
}
