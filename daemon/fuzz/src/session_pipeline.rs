//! Two sessions (the daemon's data path of one peer each) over a network
//! the input controls. Packets of several flows (UDP, and TCP SYNs whose
//! MSS the sessions clamp) go in at either side; the network delivers,
//! drops, duplicates, reorders, replays and corrupts datagrams; either side
//! may hold delivery (no interface yet) and release it; and, as a hostile
//! but authenticated peer, the input may replace what a datagram carries
//! with bytes of its own (sealed with the right key and counter), which
//! takes them through the receive path: open → FEC → KCP → per-flow order
//! → MSS clamp → delivery. The configuration (FEC sizes up to 32 + 16, as
//! larger groups are `fec_groups`' part; KCP profile, BBR,
//! unordered, flow queueing, TAP frames, MSS clamp, cipher, UDP MTU,
//! windows, send buffer) comes from the input.
//!
//! Invariants, always: no panic; memory within what the configuration
//! allows. With only an honest peer (the network may still lose, reorder,
//! replay and corrupt): every packet delivered is one that was sent,
//! unchanged but for the MSS clamp, and only once; in order within its flow
//! unless unordered delivery is on; and once the network turns clean,
//! every packet sent is delivered, except those the flow queueing dropped
//! (counted).
use crate::{before, id_of, pattern};
use arbitrary::{Arbitrary, Unstructured};
use kcpvpn_crypto::packet::{CipherKind, Opener, Sealer};
use kcpvpn_kcp::KcpConfig;
use kcpvpn_tunnel::mss::clamp;
use kcpvpn_tunnel::scheduler::flow_hash;
use kcpvpn_tunnel::session::{Session, SessionConfig, Transmit};
use std::collections::{HashMap, VecDeque};

const KEYS: [[u8; 32]; 2] = [[0xa1; 32], [0xb2; 32]];
/// Session ids: datagrams to side i carry IDS[i].
const IDS: [u32; 2] = [0x0101, 0x0202];
/// Where a test packet's id starts, after its IP and UDP/TCP headers.
const BODY: usize = 44;

#[derive(Arbitrary, Debug)]
struct Setup {
    /// FEC of what A sends (and B receives), and the other way.
    fec: [Option<(u8, u8)>; 2],
    rapid_fec: bool,
    profile: u8,
    bbr: bool,
    unordered: bool,
    flow_queueing: bool,
    ethernet: bool,
    mss_clamp: Option<u16>,
    cipher: u8,
    udp_mtu: u16,
    rcv_wnd: u8,
    snd_wnd: u8,
    send_buffer: u16,
    keepalive: bool,
    /// Key updates every 1..=256 × 10 ms, started by A (None: never).
    rekey: Option<u8>,
    start: u32,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Send {
        from_b: bool,
        flow: u8,
        len: u16,
        /// A TCP SYN with this MSS instead of a UDP datagram.
        syn: Option<u16>,
    },
    Advance(u16),
    Poll {
        b: bool,
    },
    Flush {
        b: bool,
    },
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
    /// A copy of a datagram already delivered (the replay window drops it).
    Replay {
        to_b: bool,
        idx: u8,
    },
    /// A byte changed on the way (authentication drops it).
    Corrupt {
        to_b: bool,
        idx: u8,
        at: u16,
        xor: u8,
    },
    Hold {
        b: bool,
    },
    Release {
        b: bool,
    },
    /// Hostile: a datagram's plaintext replaced by these bytes, or changed.
    Replace {
        to_b: bool,
        idx: u8,
        msg_type: u8,
        bytes: Vec<u8>,
    },
    Tamper {
        to_b: bool,
        idx: u8,
        at: u16,
        xor: u8,
    },
}

/// Datagrams a session sends, onto the network towards its peer.
struct Wire<'a> {
    out: &'a mut VecDeque<Vec<u8>>,
    cur: Vec<u8>,
}

impl Transmit for Wire<'_> {
    fn buf(&mut self) -> &mut Vec<u8> {
        self.cur.clear();
        &mut self.cur
    }
    fn commit(&mut self) {
        self.out.push_back(self.cur.clone());
    }
}

struct Side {
    s: Session,
    /// Packets sent from here, as they left (clamped), by id.
    sent: Vec<Vec<u8>>,
    /// Per packet the peer sent: delivered yet.
    got: Vec<bool>,
    /// The last id delivered per flow (of the peer's packets).
    last: HashMap<u64, u32>,
    /// Datagrams on their way to this side, and some already delivered.
    inbound: VecDeque<Vec<u8>>,
    history: Vec<Vec<u8>>,
    holding: bool,
}

/// An IPv4 packet (in an Ethernet frame with `ethernet`): UDP, or a TCP SYN
/// with an MSS option; then, from `BODY` on, the id and its pattern.
fn packet(id: u32, flow: u8, len: usize, syn: Option<u16>, ethernet: bool) -> Vec<u8> {
    let l3 = if ethernet { 14 } else { 0 };
    let mut p = vec![0u8; l3];
    if ethernet {
        p[..12].copy_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]);
        p[12..14].copy_from_slice(&[0x08, 0x00]);
    }
    let total = BODY + len;
    let mut ip = vec![0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = if syn.is_some() { 6 } else { 17 };
    ip[12..16].copy_from_slice(&[10, 9, 0, 1]);
    ip[16..20].copy_from_slice(&[10, 9, 0, 2]);
    p.extend_from_slice(&ip);
    let sport = 1000 + flow as u16 % 16;
    match syn {
        Some(mss) => {
            let mut t = vec![0u8; 24];
            t[0..2].copy_from_slice(&sport.to_be_bytes());
            t[2..4].copy_from_slice(&80u16.to_be_bytes());
            t[12] = 6 << 4;
            t[13] = 0x02;
            t[20..24].copy_from_slice(&[2, 4, (mss >> 8) as u8, mss as u8]);
            p.extend_from_slice(&t);
        }
        None => {
            let mut h = vec![0u8; 24];
            h[0..2].copy_from_slice(&sport.to_be_bytes());
            h[2..4].copy_from_slice(&53u16.to_be_bytes());
            h[4..6].copy_from_slice(&((total - 20) as u16).to_be_bytes());
            p.extend_from_slice(&h);
        }
    }
    p.extend_from_slice(&pattern(id, len));
    p
}

/// Runs `f` on side `i` and gives it the queue towards its peer.
fn with<R>(s: &mut [Side; 2], i: usize, f: impl FnOnce(&mut Side, &mut Wire) -> R) -> R {
    let (x, y) = s.split_at_mut(1);
    let (me, peer) = if i == 1 {
        (&mut y[0], &mut x[0])
    } else {
        (&mut x[0], &mut y[0])
    };
    let mut w = Wire {
        out: &mut peer.inbound,
        cur: Vec::new(),
    };
    f(me, &mut w)
}

struct Checker {
    ethernet: bool,
    unordered: bool,
    hostile: bool,
}

impl Checker {
    /// Datagram `d` into side `to`; checks what it delivers.
    fn input(&self, s: &mut [Side; 2], to: usize, mut d: Vec<u8>, now: u32) {
        let (x, y) = s.split_at_mut(1);
        let (me, peer) = if to == 1 {
            (&mut y[0], &mut x[0])
        } else {
            (&mut x[0], &mut y[0])
        };
        let mut out: Vec<Vec<u8>> = Vec::new();
        me.s.input(&mut d.clone(), now, &mut |p: &[u8]| out.push(p.to_vec()));
        if me.history.len() < 256 {
            me.history.push(std::mem::take(&mut d));
        }
        self.check(me, &peer.sent, out);
    }

    fn check(&self, me: &mut Side, peer_sent: &[Vec<u8>], out: Vec<Vec<u8>>) {
        for p in out {
            assert!(p.len() <= 65535, "a packet of {} bytes", p.len());
            if self.hostile {
                continue;
            }
            let l3 = if self.ethernet { 14 } else { 0 };
            let id = id_of(&p, l3 + BODY).expect("a packet without its id") as usize;
            assert!(id < peer_sent.len(), "packet {id} was never sent");
            // Clamped as it left, and again (by this side's MTU) on arrival.
            let mut want = peer_sent[id].clone();
            if let Some(mtu) = me.s.config().mss_clamp_mtu {
                clamp(&mut want, mtu, self.ethernet);
            }
            assert_eq!(p, want, "packet {id} altered on the way");
            if me.got.len() < peer_sent.len() {
                me.got.resize(peer_sent.len(), false);
            }
            assert!(!me.got[id], "packet {id} delivered twice");
            me.got[id] = true;
            if !self.unordered {
                let flow = flow_hash(&p, self.ethernet);
                if let Some(&prev) = me.last.get(&flow) {
                    assert!(prev < id as u32, "packet {id} overtook {prev} of its flow");
                }
                me.last.insert(flow, id as u32);
            }
        }
    }

    fn release(&self, s: &mut [Side; 2], i: usize) {
        let (x, y) = s.split_at_mut(1);
        let (me, peer) = if i == 1 {
            (&mut y[0], &mut x[0])
        } else {
            (&mut x[0], &mut y[0])
        };
        let mut out: Vec<Vec<u8>> = Vec::new();
        me.s.release_delivery(&mut |p: &[u8]| out.push(p.to_vec()));
        me.holding = false;
        self.check(me, &peer.sent, out);
    }
}

/// A datagram's plaintext opened (its counter kept), for the hostile ops.
fn reseal(
    d: &[u8],
    cipher: CipherKind,
    to: usize,
    f: impl FnOnce(u8, &mut Vec<u8>) -> u8,
) -> Option<Vec<u8>> {
    let key = &KEYS[1 - to];
    let mut buf = d.to_vec();
    let o = Opener::new(cipher, key).open_in_place(&mut buf).ok()?;
    let (counter, mut plain) = (o.counter, o.payload.to_vec());
    let msg_type = f(o.msg_type, &mut plain);
    let mut sealer = Sealer::new(cipher, key, IDS[to]);
    sealer.set_counter_for_testing(counter);
    let mut out = Vec::new();
    sealer.seal_into(msg_type, &plain, &mut out).ok()?;
    Some(out)
}

pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(setup) = Setup::arbitrary(&mut u) else {
        return;
    };
    let profile = kcpvpn_kcp::PROFILES[setup.profile as usize % 4];
    let mut kcp = KcpConfig::profile(profile).unwrap();
    kcp.bbr = setup.bbr;
    kcp.unordered = setup.unordered;
    kcp.rcv_wnd = 128 + setup.rcv_wnd as u16 * 8;
    kcp.snd_wnd = 16 + setup.snd_wnd as u16 * 8;
    let cipher = CipherKind::ALL[setup.cipher as usize % 4];
    let udp_mtu = 576 + setup.udp_mtu as usize % 925;
    let fec = |f: Option<(u8, u8)>| {
        f.map(|(d, p)| {
            let (d, p) = crate::fec_counts(d, p);
            (d as u8, p as u8)
        })
    };
    let cfg = |i: usize| SessionConfig {
        kcp: kcp.clone(),
        fec_send: fec(setup.fec[i]),
        fec_recv: fec(setup.fec[1 - i]),
        rapid_fec: setup.rapid_fec,
        cipher,
        keepalive_ms: if setup.keepalive { 10_000 } else { 0 },
        idle_timeout_ms: 0,
        udp_mtu,
        send_buffer_bytes: 4096 + setup.send_buffer as usize * 32,
        max_packet: 1514,
        mss_clamp_mtu: setup.mss_clamp.map(|m| 576 + m % 1000),
        ethernet: setup.ethernet,
        flow_queueing: setup.flow_queueing,
        rekey_interval_ms: setup.rekey.map_or(0, |r| 10 * (r as u32 + 1)),
    };
    let mut now = setup.start;
    let side = |i: usize, now: u32| {
        let s = Session::new(cfg(i), 7, &KEYS[i], &KEYS[1 - i], IDS[1 - i], now)
            .expect("FEC counts within 1..=256");
        Side {
            s,
            sent: Vec::new(),
            got: Vec::new(),
            last: HashMap::new(),
            inbound: VecDeque::new(),
            history: Vec::new(),
            holding: false,
        }
    };
    let mut s = [side(0, now), side(1, now)];
    s[0].s.start_rekeying(now);
    let mut ck = Checker {
        ethernet: setup.ethernet,
        unordered: setup.unordered,
        hostile: false,
    };
    // What the configuration lets one session hold: its windows of
    // segments, the send buffer, FEC's 64 groups of shards; generously.
    let n_fec = |f: Option<(u8, u8)>| fec(f).map_or(0, |(d, p)| d as usize + p as usize);
    let bound = |i: usize| {
        let segs = (kcp.rcv_wnd as usize + kcp.snd_wnd as usize + 512).next_power_of_two();
        4 * segs * (udp_mtu + 128)
            + 4 * (4096 + setup.send_buffer as usize * 32)
            + 2 * 66 * n_fec(setup.fec[1 - i]) * (udp_mtu + 64)
            + (4 << 20)
    };

    let mut ops = 0;
    while !u.is_empty() && ops < 1000 {
        ops += 1;
        let Ok(op) = Op::arbitrary(&mut u) else {
            break;
        };
        let pick = |s: &[Side; 2], to_b: bool, idx: u8| {
            let q = &s[to_b as usize].inbound;
            (!q.is_empty()).then(|| idx as usize % q.len())
        };
        match op {
            Op::Send {
                from_b,
                flow,
                len,
                syn,
            } => {
                let i = from_b as usize;
                // The daemon reads its interface only while this holds.
                if !s[i].s.wants_packets() {
                    continue;
                }
                let id = s[i].sent.len() as u32;
                let mut p = packet(id, flow, 4 + len as usize % 1400, syn, setup.ethernet);
                if s[i].s.send_packet(&mut p, now) {
                    s[i].sent.push(p);
                } else {
                    s[i].sent.push(Vec::new()); // refused: never expected
                }
            }
            Op::Advance(ms) => now = now.wrapping_add(ms as u32 % 3000),
            Op::Poll { b } => with(&mut s, b as usize, |me, w| me.s.poll(now, w)),
            Op::Flush { b } => with(&mut s, b as usize, |me, w| me.s.flush(now, w)),
            Op::Deliver { to_b, idx } => {
                if let Some(k) = pick(&s, to_b, idx) {
                    let d = s[to_b as usize].inbound.remove(k).unwrap();
                    ck.input(&mut s, to_b as usize, d, now);
                }
            }
            Op::Drop { to_b, idx } => {
                if let Some(k) = pick(&s, to_b, idx) {
                    s[to_b as usize].inbound.remove(k);
                }
            }
            Op::Dup { to_b, idx } => {
                if let Some(k) = pick(&s, to_b, idx) {
                    let d = s[to_b as usize].inbound[k].clone();
                    s[to_b as usize].inbound.push_back(d);
                }
            }
            Op::DeliverAll { to_b } => {
                while let Some(d) = s[to_b as usize].inbound.pop_front() {
                    ck.input(&mut s, to_b as usize, d, now);
                }
            }
            Op::Replay { to_b, idx } => {
                let h = &s[to_b as usize].history;
                if !h.is_empty() {
                    let d = h[idx as usize % h.len()].clone();
                    let before = s[to_b as usize].s.stats.clone();
                    ck.input(&mut s, to_b as usize, d, now);
                    let after = &s[to_b as usize].s.stats;
                    assert_eq!(
                        before.datagrams_in, after.datagrams_in,
                        "a replay was accepted"
                    );
                }
            }
            Op::Corrupt { to_b, idx, at, xor } => {
                if let Some(k) = pick(&s, to_b, idx) {
                    let d = &mut s[to_b as usize].inbound[k];
                    let i = at as usize % d.len();
                    d[i] ^= xor;
                    // Without a cipher nothing authenticates the datagram.
                    ck.hostile |= cipher == CipherKind::None;
                }
            }
            Op::Hold { b } => {
                s[b as usize].s.hold_delivery();
                s[b as usize].holding = true;
            }
            Op::Release { b } => ck.release(&mut s, b as usize),
            Op::Replace {
                to_b,
                idx,
                msg_type,
                bytes,
            } => {
                if let Some(k) = pick(&s, to_b, idx) {
                    let d = &s[to_b as usize].inbound[k];
                    if let Some(n) = reseal(d, cipher, to_b as usize, |_, p| {
                        *p = bytes;
                        msg_type % 6
                    }) {
                        s[to_b as usize].inbound[k] = n;
                        ck.hostile = true;
                    }
                }
            }
            Op::Tamper { to_b, idx, at, xor } => {
                if let Some(k) = pick(&s, to_b, idx) {
                    let d = &s[to_b as usize].inbound[k];
                    if let Some(n) = reseal(d, cipher, to_b as usize, |t, p| {
                        if !p.is_empty() {
                            let i = at as usize % p.len();
                            p[i] ^= xor;
                        }
                        t
                    }) {
                        s[to_b as usize].inbound[k] = n;
                        ck.hostile = true;
                    }
                }
            }
        }
        for (i, side) in s.iter().enumerate() {
            let held = side.s.heap_bytes();
            assert!(
                held <= bound(i),
                "session {i} holds {held} bytes, bound {}",
                bound(i)
            );
            assert!(side.inbound.len() < 1 << 16, "runaway datagrams");
        }
    }
    if ck.hostile {
        return;
    }

    // The network turns clean, the interfaces are there: run the timers
    // until everything sent is delivered or was dropped by flow queueing.
    for i in 0..2 {
        if s[i].holding {
            ck.release(&mut s, i);
        }
    }
    let expected = |me: &Side, peer: &Side| {
        let sent = peer.sent.iter().filter(|p| !p.is_empty()).count() as u64;
        let dropped = peer
            .s
            .scheduler_stats()
            .map_or(0, |st| st.codel_drops + st.overflow_drops);
        let got = me.got.iter().filter(|&&g| g).count() as u64;
        (got, sent - dropped.min(sent))
    };
    for _ in 0..20_000 {
        for i in 0..2 {
            while let Some(d) = s[i].inbound.pop_front() {
                ck.input(&mut s, i, d, now);
            }
            with(&mut s, i, |me, w| {
                me.s.flush(now, w);
                me.s.poll(now, w);
            });
        }
        let (a, b) = (expected(&s[0], &s[1]), expected(&s[1], &s[0]));
        assert!(a.0 <= a.1 && b.0 <= b.1, "more delivered than sent");
        if a.0 == a.1 && b.0 == b.1 {
            return;
        }
        if s[0].inbound.is_empty() && s[1].inbound.is_empty() {
            let t = [s[0].s.next_timeout(now), s[1].s.next_timeout(now)];
            let next = if before(t[0], t[1]) { t[0] } else { t[1] };
            now = if before(now, next) {
                next
            } else {
                now.wrapping_add(1)
            };
        }
    }
    let (a, b) = (expected(&s[0], &s[1]), expected(&s[1], &s[0]));
    panic!(
        "not everything delivered on a clean network: B got {} of {}, A got {} of {}",
        a.0, a.1, b.0, b.1
    );
}
