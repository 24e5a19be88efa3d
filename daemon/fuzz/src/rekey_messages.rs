//! Key updates (tunnel `keys`) driven by arbitrary input: the two sides of
//! a session exchange rekey messages and data over a path that loses,
//! repeats and delays, while hostile plaintexts are fed to either side.
//!
//! Always: no panic, no state that grows. While no hostile plaintext was
//! fed: data sealed by either side opens at the other, whatever was lost,
//! repeated or delayed (no update ever strands a side).
use kcpvpn_crypto::packet::{CipherKind, MSG_DATA, MSG_REKEY};
use kcpvpn_tunnel::keys::Keys;

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

fn seal(k: &mut Keys, t: u8, plain: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    k.sealer()?.seal_into(t, plain, &mut out).ok()?;
    Some(out)
}

/// Opens `d` at `k`; a rekey message is taken. Returns whether it opened.
fn take(k: &mut Keys, d: &mut [u8], now: u32) -> bool {
    match k.open(d, now) {
        Ok((_, o)) => {
            if o.msg_type == MSG_REKEY {
                let p = o.payload.to_vec();
                k.on_rekey(&p, now);
            }
            true
        }
        Err(_) => false,
    }
}

pub fn run(data: &[u8]) {
    let mut inp = Input(data);
    let kind = match inp.byte().unwrap_or(0) % 4 {
        0 => CipherKind::Aes256Gcm,
        1 => CipherKind::Aes128Gcm,
        2 => CipherKind::ChaCha20Poly1305,
        _ => CipherKind::None,
    };
    let interval = 10 * (inp.byte().unwrap_or(10) as u32 + 1);
    let (a, b) = ([0x11u8; 32], [0x22u8; 32]);
    let mut now = 0u32;
    // side 0: the client (initiator), side 1: the server.
    let mut s = [
        Keys::new(kind, &a, &b, 2, false, 0, now),
        Keys::new(kind, &b, &a, 1, false, 0, now),
    ];
    s[0].initiate(interval, now);
    // Datagrams on their way to side i (delayed ones may be delivered late).
    let mut wire: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
    let mut hostile = false;
    let mut steps = 0;
    while let Some(op) = inp.byte() {
        steps += 1;
        if steps > 2000 {
            break;
        }
        let side = (op >> 7) as usize;
        match op % 8 {
            // Time passes; timers run.
            0 => {
                now = now.wrapping_add(inp.byte().unwrap_or(1) as u32 * 7);
                for k in s.iter_mut() {
                    k.poll(now);
                }
            }
            // A side's pending rekey message leaves.
            1 | 2 => {
                if let Some(m) = s[side].take_outbox() {
                    if let Some(d) = seal(&mut s[side], MSG_REKEY, &m.encode()) {
                        wire[1 - side].push(d);
                    }
                }
            }
            // The oldest (or, with the high bits, a later) datagram to a side
            // arrives; sometimes it is also repeated.
            3 => {
                let q = &mut wire[side];
                if !q.is_empty() {
                    let i = (op as usize >> 4) % q.len();
                    let mut d = q.remove(i);
                    let again = d.clone();
                    take(&mut s[side], &mut d, now);
                    if op & 0x40 != 0 {
                        let mut d = again;
                        take(&mut s[side], &mut d, now);
                    }
                }
            }
            // A datagram to a side is lost.
            4 => {
                let q = &mut wire[side];
                if !q.is_empty() {
                    q.remove(0);
                }
            }
            // Hostile: an authenticated peer's arbitrary rekey plaintext.
            5 => {
                let n = inp.byte().unwrap_or(0) as usize % 48;
                let junk = inp.bytes(n).to_vec();
                hostile = true;
                s[side].on_rekey(&junk, now);
            }
            // Data now, delivered at once: must open unless a side was fed
            // hostile input.
            _ => {
                if let Some(mut d) = seal(&mut s[side], MSG_DATA, b"data") {
                    let ok = take(&mut s[1 - side], &mut d, now);
                    assert!(ok || hostile, "an honest pair lost step after an update");
                }
            }
        }
        for q in wire.iter_mut() {
            q.truncate(64);
        }
    }
}
