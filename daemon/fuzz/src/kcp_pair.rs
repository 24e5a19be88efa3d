//! Two KCP endpoints talking over a network the input controls: it sends
//! messages either way, advances time, and delivers, drops, duplicates or
//! reorders the datagrams in flight; the configuration (BBR congestion
//! control and pacing, unordered delivery, windows, MTU, profile) comes from
//! the input too. At the end the network turns clean and runs until
//! everything is through.
//!
//! Invariants: no panic; every datagram fits the MTU; `check` is never more
//! than an interval away; every message arrives whole, unchanged and once;
//! in order unless unordered delivery is on, and even then a message of
//! several segments only after everything sent before it; memory stays
//! within what the windows allow; and once the network is clean, every
//! message sent is delivered.
use crate::{before, id_of, pattern};
use arbitrary::{Arbitrary, Unstructured};
use kcpvpn_kcp::{Kcp, KcpConfig};
use std::collections::VecDeque;

const CONV: u32 = 0x0b0b_cafe;

#[derive(Arbitrary, Debug)]
struct Setup {
    bbr: bool,
    unordered: bool,
    nodelay: bool,
    interval: u8,
    resend: u8,
    nc: bool,
    snd_wnd: u8,
    rcv_wnd: u8,
    mtu: u16,
    ack_nodelay: bool,
    /// With BBR: outer bytes and parity factor per segment (set_path_cost).
    path_extra: u8,
    path_factor: u8,
    start: u32,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Send {
        from_b: bool,
        len: u16,
    },
    Advance(u16),
    /// Deliver, drop or duplicate the datagram at this index of the queue
    /// towards A or B.
    Deliver {
        to_b: bool,
        idx: u8,
    },
    Drop {
        to_b: bool,
        idx: u8,
    },
    Dup {
        to_b: bool,
        idx: u8,
    },
    DeliverAll {
        to_b: bool,
    },
    Update {
        b: bool,
    },
    Flush {
        b: bool,
    },
    Recv {
        b: bool,
    },
}

/// One side: its KCP, what it sent (lengths by id) and what it got.
struct Side {
    kcp: Kcp,
    mtu: usize,
    interval: u32,
    sent: Vec<usize>,
    /// Per message the peer sent: delivered yet.
    got: Vec<bool>,
    /// In-order delivery: the next id expected; else how many arrived.
    next: u32,
    /// Datagrams on their way to this side.
    inbound: VecDeque<Vec<u8>>,
    buf: Vec<u8>,
}

impl Side {
    fn emit(&mut self, now: u32, update: bool, out: &mut VecDeque<Vec<u8>>) {
        let mtu = self.mtu;
        let mut push = |d: &[u8]| {
            assert!(d.len() <= mtu, "datagram of {} bytes, MTU {mtu}", d.len());
            assert!(d.len() >= kcpvpn_kcp::OVERHEAD);
            out.push_back(d.to_vec());
        };
        if update {
            self.kcp.update(now, &mut push);
        } else {
            self.kcp.flush(now, &mut push);
        }
        let next = self.kcp.check(now);
        assert!(
            !before(now.wrapping_add(self.interval), next),
            "check {next} more than an interval after {now}"
        );
    }
}

/// Takes every whole message `to` has, checking it against what `from` sent.
fn receive(to: &mut Side, peer_sent: &[usize], unordered: bool) {
    while let Some(n) = to.kcp.peek_size() {
        if n > to.buf.len() {
            to.buf.resize(n, 0);
        }
        let got = to
            .kcp
            .recv(&mut to.buf)
            .expect("peek_size promised a message");
        assert_eq!(got, n, "recv disagrees with peek_size");
        let m = &to.buf[..n];
        let id = id_of(m, 0).expect("a message shorter than its id") as usize;
        assert!(id < peer_sent.len(), "message {id} was never sent");
        assert_eq!(
            m,
            &pattern(id as u32, peer_sent[id])[..],
            "message {id} altered"
        );
        if to.got.len() < peer_sent.len() {
            to.got.resize(peer_sent.len(), false);
        }
        assert!(!to.got[id], "message {id} delivered twice");
        to.got[id] = true;
        let mss = to.mtu - kcpvpn_kcp::OVERHEAD;
        if !unordered {
            assert_eq!(id as u32, to.next, "message {id} out of order");
            to.next += 1;
        } else if n > mss {
            // Several segments: only ordinary (in-order) delivery.
            assert!(
                to.got[..id].iter().all(|&g| g),
                "message {id} of {n} bytes overtook an earlier one"
            );
        }
    }
}

fn bound(s: &Side, snd_limit: usize, rcv_wnd: usize) -> usize {
    // Rings rounded up to powers of two, segment buffers of an MTU each,
    // plus the ACK list and output buffer; generous on purpose: the point
    // is that memory follows the windows, not the input.
    let segs = (snd_limit + 255).next_power_of_two() + (rcv_wnd + 255).next_power_of_two();
    4 * segs * (s.mtu + 64) + (1 << 20)
}

pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(setup) = Setup::arbitrary(&mut u) else {
        return;
    };
    let mut cfg = KcpConfig::manual(
        setup.nodelay,
        setup.interval as u32,
        (setup.resend % 4) as u32,
        setup.nc,
    );
    cfg.bbr = setup.bbr;
    cfg.unordered = setup.unordered;
    cfg.snd_wnd = 1 + setup.snd_wnd as u16 * 4;
    cfg.rcv_wnd = setup.rcv_wnd as u16 * 8;
    cfg.mtu = 50 + setup.mtu as usize % 1450;
    cfg.ack_nodelay = setup.ack_nodelay;
    let n = cfg.normalized();
    let rcv_wnd = n.rcv_wnd as usize;
    let snd_limit = 2 * n.snd_wnd as usize + 255;
    let new_side = || {
        let mut kcp = Kcp::new(CONV, cfg.clone());
        if setup.bbr {
            kcp.set_path_cost(
                setup.path_extra as usize,
                1.0 + setup.path_factor as f64 / 64.0,
            );
        }
        Side {
            kcp,
            mtu: n.mtu,
            interval: n.interval,
            sent: Vec::new(),
            got: Vec::new(),
            next: 0,
            inbound: VecDeque::new(),
            buf: vec![0; 4096],
        }
    };
    let mut s = [new_side(), new_side()];
    let max_msg = s[0].kcp.max_message().min(8192);
    let mut now = setup.start;
    let unordered = setup.unordered;

    let mut ops = 0;
    while !u.is_empty() && ops < 2000 {
        ops += 1;
        let Ok(op) = Op::arbitrary(&mut u) else {
            break;
        };
        match op {
            Op::Send { from_b, len } => {
                let i = from_b as usize;
                // The daemon stops reading its interface at a full buffer.
                if s[i].kcp.wait_snd() >= snd_limit {
                    continue;
                }
                let len = 4 + len as usize % (max_msg - 3);
                let id = s[i].sent.len() as u32;
                s[i].kcp
                    .send(&pattern(id, len))
                    .expect("a message within max_message");
                s[i].sent.push(len);
            }
            Op::Advance(ms) => now = now.wrapping_add(ms as u32 % 2000),
            Op::Deliver { to_b, idx } | Op::Drop { to_b, idx } | Op::Dup { to_b, idx }
                if s[to_b as usize].inbound.is_empty() =>
            {
                let _ = idx;
            }
            Op::Deliver { to_b, idx } => {
                let t = &mut s[to_b as usize];
                let k = idx as usize % t.inbound.len();
                let d = t.inbound.remove(k).expect("index within the queue");
                t.kcp.input(&d, now).expect("a genuine datagram");
            }
            Op::Drop { to_b, idx } => {
                let t = &mut s[to_b as usize];
                let k = idx as usize % t.inbound.len();
                t.inbound.remove(k);
            }
            Op::Dup { to_b, idx } => {
                let t = &mut s[to_b as usize];
                let k = idx as usize % t.inbound.len();
                let d = t.inbound[k].clone();
                t.inbound.push_back(d);
            }
            Op::DeliverAll { to_b } => {
                let t = &mut s[to_b as usize];
                while let Some(d) = t.inbound.pop_front() {
                    t.kcp.input(&d, now).expect("a genuine datagram");
                }
            }
            Op::Update { b } | Op::Flush { b } => {
                let update = matches!(op, Op::Update { .. });
                let (x, y) = s.split_at_mut(1);
                let (me, peer) = if b {
                    (&mut y[0], &mut x[0])
                } else {
                    (&mut x[0], &mut y[0])
                };
                me.emit(now, update, &mut peer.inbound);
            }
            Op::Recv { b } => {
                let (x, y) = s.split_at_mut(1);
                let (me, peer) = if b {
                    (&mut y[0], &mut x[0])
                } else {
                    (&mut x[0], &mut y[0])
                };
                receive(me, &peer.sent, unordered);
            }
        }
        for side in &s {
            assert!(
                side.kcp.heap_bytes() <= bound(side, snd_limit, rcv_wnd),
                "memory beyond the windows"
            );
            assert!(side.inbound.len() < 1 << 16);
        }
    }

    // The network turns clean: run the timers until all is delivered.
    for _ in 0..20_000 {
        for i in 0..2 {
            let (x, y) = s.split_at_mut(1);
            let (me, peer) = if i == 1 {
                (&mut y[0], &mut x[0])
            } else {
                (&mut x[0], &mut y[0])
            };
            while let Some(d) = me.inbound.pop_front() {
                me.kcp.input(&d, now).expect("a genuine datagram");
            }
            receive(me, &peer.sent, unordered);
            me.emit(now, true, &mut peer.inbound);
        }
        let done =
            |me: &Side, peer: &Side| me.got.len() >= peer.sent.len() && me.got.iter().all(|&g| g);
        if s[0].inbound.is_empty()
            && s[1].inbound.is_empty()
            && done(&s[0], &s[1])
            && done(&s[1], &s[0])
            && s[0].kcp.wait_snd() == 0
            && s[1].kcp.wait_snd() == 0
        {
            return;
        }
        if s[0].inbound.is_empty() && s[1].inbound.is_empty() {
            let t = [s[0].kcp.check(now), s[1].kcp.check(now)];
            let next = if before(t[0], t[1]) { t[0] } else { t[1] };
            now = if before(now, next) {
                next
            } else {
                now.wrapping_add(1)
            };
        }
    }
    panic!(
        "not everything delivered on a clean network: A sent {}, B got {}; B sent {}, A got {}; in flight {} / {}",
        s[0].sent.len(),
        s[1].got.iter().filter(|&&g| g).count(),
        s[1].sent.len(),
        s[0].got.iter().filter(|&&g| g).count(),
        s[0].kcp.wait_snd(),
        s[1].kcp.wait_snd(),
    );
}
