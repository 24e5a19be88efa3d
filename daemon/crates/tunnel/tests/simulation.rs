//! Deterministic simulation of two sessions over a bad link: simulated clock,
//! seeded loss, reordering, duplication and delay. Every message must arrive
//! exactly once, in order, intact, for every KCP profile, FEC on and off and
//! rapid FEC on and off; forged, truncated and replayed datagrams must be
//! counted and dropped, never delivered.
use kcpvpn_crypto::packet::CipherKind;
use kcpvpn_kcp::KcpConfig;
use kcpvpn_tunnel::session::{Received, Session, SessionConfig, VecTransmit};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

const KEY_AB: [u8; 32] = [0x11; 32];
const KEY_BA: [u8; 32] = [0x22; 32];

#[derive(Clone, Copy)]
struct LinkParams {
    loss: f64,
    dup: f64,
    delay_ms: u32,
    jitter_ms: u32,
}

/// One direction of the simulated path.
struct Link {
    p: LinkParams,
    rng: SmallRng,
    seq: u64,
    queue: BinaryHeap<Reverse<(u32, u64, Vec<u8>)>>,
    sent: u64,
    dropped: u64,
}

impl Link {
    fn new(p: LinkParams, seed: u64) -> Link {
        Link {
            p,
            rng: SmallRng::seed_from_u64(seed),
            seq: 0,
            queue: BinaryHeap::new(),
            sent: 0,
            dropped: 0,
        }
    }
    fn push(&mut self, now: u32, d: Vec<u8>) {
        self.sent += 1;
        if self.rng.random::<f64>() < self.p.loss {
            self.dropped += 1;
            return;
        }
        let copies = if self.rng.random::<f64>() < self.p.dup {
            2
        } else {
            1
        };
        for _ in 0..copies {
            // Jitter reorders: a later datagram may get a shorter delay.
            let j = if self.p.jitter_ms > 0 {
                self.rng.random_range(0..=self.p.jitter_ms)
            } else {
                0
            };
            self.seq += 1;
            self.queue
                .push(Reverse((now + self.p.delay_ms + j, self.seq, d.clone())));
        }
    }
    fn pop_due(&mut self, now: u32) -> Option<Vec<u8>> {
        if self
            .queue
            .peek()
            .is_some_and(|Reverse((t, _, _))| *t <= now)
        {
            self.queue.pop().map(|Reverse((_, _, d))| d)
        } else {
            None
        }
    }
}

fn config(profile: &str, fec: Option<(u8, u8)>, rapid: bool) -> SessionConfig {
    let kcp = KcpConfig::profile(profile).expect("profile");
    SessionConfig {
        kcp,
        fec_send: fec,
        fec_recv: fec,
        rapid_fec: rapid,
        cipher: CipherKind::Aes256Gcm,
        keepalive_ms: 10_000,
        idle_timeout_ms: 0,
        udp_mtu: 1350,
        send_buffer_bytes: 4 << 20,
        max_packet: 9100,
        mss_clamp_mtu: None,
        ethernet: false,
    }
}

fn message(i: u32, rng: &mut SmallRng) -> Vec<u8> {
    // Mostly IP-packet sizes, sometimes a jumbo frame that spans several segments.
    let len = if rng.random::<f64>() < 0.05 {
        rng.random_range(1400..=9000)
    } else {
        rng.random_range(1..=1400)
    };
    let mut m = vec![0u8; len.max(4)];
    m[..4].copy_from_slice(&i.to_le_bytes());
    for (k, b) in m.iter_mut().enumerate().skip(4) {
        *b = (i as usize * 31 + k) as u8;
    }
    m
}

struct Outcome {
    delivered: Vec<Vec<u8>>,
    sent: Vec<Vec<u8>>,
    /// Per message: delivery time minus send time (ms).
    latency_ms: Vec<u32>,
    fec_recovered: u64,
    elapsed_ms: u32,
}

/// Sends `n` messages from A to B (and a trickle back) over the lossy link.
fn simulate(cfg: SessionConfig, link: LinkParams, n: u32, seed: u64, gap_ms: u32) -> Outcome {
    let mut now: u32 = 1000;
    let mut a = Session::new(cfg.clone(), 7, &KEY_AB, &KEY_BA, 2, now).unwrap();
    let mut b = Session::new(cfg, 7, &KEY_BA, &KEY_AB, 1, now).unwrap();
    let mut ab = Link::new(link, seed);
    let mut ba = Link::new(link, seed ^ 0xdead);
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x5eed);
    let mut sent = Vec::new();
    let mut sent_at = Vec::new();
    let mut delivered = Vec::new();
    let mut latency_ms = Vec::new();
    let mut next_send = now;
    let limit = now + 600_000;
    while now < limit {
        if sent.len() < n as usize && now >= next_send && a.wants_packets() {
            let m = message(sent.len() as u32, &mut rng);
            assert!(a.send_packet(&mut m.clone()));
            sent.push(m);
            sent_at.push(now);
            next_send = now + gap_ms;
        }
        let mut tx = VecTransmit::default();
        a.flush(now, &mut tx);
        a.poll(now, &mut tx);
        for d in tx.datagrams.drain(..) {
            ab.push(now, d);
        }
        while let Some(mut d) = ab.pop_due(now) {
            b.input(&mut d, now, &mut |p: &[u8]| {
                latency_ms.push(now - sent_at[delivered.len()]);
                delivered.push(p.to_vec());
            });
        }
        let mut tx = VecTransmit::default();
        b.flush(now, &mut tx);
        b.poll(now, &mut tx);
        for d in tx.datagrams.drain(..) {
            ba.push(now, d);
        }
        while let Some(mut d) = ba.pop_due(now) {
            a.input(&mut d, now, &mut |_p: &[u8]| panic!("B sent no data"));
        }
        if delivered.len() == n as usize && sent.len() == n as usize {
            break;
        }
        now += 1;
    }
    Outcome {
        delivered,
        sent,
        latency_ms,
        fec_recovered: b.fec_recovered(),
        elapsed_ms: now - 1000,
    }
}

fn assert_exactly_once(o: &Outcome, what: &str) {
    assert_eq!(
        o.delivered.len(),
        o.sent.len(),
        "{what}: {} of {} delivered",
        o.delivered.len(),
        o.sent.len()
    );
    for (i, (d, s)) in o.delivered.iter().zip(&o.sent).enumerate() {
        assert!(
            d == s,
            "{what}: message {i} differs (len {} vs {})",
            d.len(),
            s.len()
        );
    }
}

#[test]
fn every_profile_fec_and_loss_delivers_exactly_once_in_order() {
    for profile in ["normal", "fast", "fast2", "fast3"] {
        for fec in [None, Some((10, 3))] {
            for rapid in [false, true] {
                if rapid && fec.is_none() {
                    continue;
                }
                for loss in [0.0, 0.1, 0.3] {
                    let link = LinkParams {
                        loss,
                        dup: 0.02,
                        delay_ms: 20,
                        jitter_ms: 10,
                    };
                    let o = simulate(config(profile, fec, rapid), link, 300, 42, 1);
                    assert_exactly_once(
                        &o,
                        &format!("{profile} fec={fec:?} rapid={rapid} loss={loss}"),
                    );
                }
            }
        }
    }
}

#[test]
fn fec_recovers_losses_without_waiting_for_retransmission() {
    let link = LinkParams {
        loss: 0.05,
        dup: 0.0,
        delay_ms: 20,
        jitter_ms: 0,
    };
    let o = simulate(config("fast", Some((10, 3)), false), link, 2000, 7, 0);
    assert_exactly_once(&o, "fec 10/3 at 5% loss");
    assert!(o.fec_recovered > 0, "FEC recovered nothing at 5% loss");
}

/// Sparse traffic (one message per 100 ms): without rapid FEC a lost packet
/// waits for a retransmission; with it, parity follows within one interval.
#[test]
fn rapid_fec_recovers_sparse_traffic() {
    let link = LinkParams {
        loss: 0.1,
        dup: 0.0,
        delay_ms: 20,
        jitter_ms: 0,
    };
    let with = simulate(config("fast", Some((10, 3)), true), link, 200, 9, 100);
    let without = simulate(config("fast", Some((10, 3)), false), link, 200, 9, 100);
    assert_exactly_once(&with, "rapid");
    assert_exactly_once(&without, "no rapid");
    assert!(with.fec_recovered > 0, "rapid FEC recovered nothing");
    assert!(with.fec_recovered > without.fec_recovered);
    let _ = (with.elapsed_ms, without.elapsed_ms);
    // Latency: with rapid FEC a lost message of sparse traffic is repaired
    // within a few ms of its parity; without, it waits for the RTO (>= 100 ms).
    let worst = |o: &Outcome| {
        let mut l = o.latency_ms.clone();
        l.sort_unstable();
        l[l.len() * 95 / 100]
    };
    assert!(
        worst(&with) <= 20 + 10,
        "rapid FEC p95 one-way latency {} ms",
        worst(&with)
    );
    assert!(
        worst(&without) >= 20 + 100,
        "without rapid FEC p95 {} ms",
        worst(&without)
    );
}

fn pair() -> (Session, Session) {
    let cfg = config("fast", Some((10, 3)), false);
    (
        Session::new(cfg.clone(), 7, &KEY_AB, &KEY_BA, 2, 0).unwrap(),
        Session::new(cfg, 7, &KEY_BA, &KEY_AB, 1, 0).unwrap(),
    )
}

fn one_datagram(a: &mut Session) -> Vec<u8> {
    assert!(a.send_packet(&mut b"hello through the tunnel".to_vec()));
    let mut tx = VecTransmit::default();
    a.flush(0, &mut tx);
    tx.datagrams.into_iter().next().expect("a datagram")
}

#[test]
fn tampered_datagrams_are_counted_and_never_delivered() {
    let (mut a, mut b) = pair();
    let d = one_datagram(&mut a);
    for i in 0..d.len() {
        let mut t = d.clone();
        t[i] ^= 0x40;
        let got = b.input(&mut t, 0, &mut |_p: &[u8]| {
            panic!("tampered datagram delivered")
        });
        assert_eq!(got, Received::Dropped, "flipped byte {i} accepted");
    }
    assert!(b.stats.auth_failures + b.stats.malformed + b.stats.replays >= d.len() as u64);
    let mut ok = d.clone();
    let mut got = Vec::new();
    assert_eq!(
        b.input(&mut ok, 0, &mut |p: &[u8]| got.push(p.to_vec())),
        Received::Data
    );
    assert_eq!(got, vec![b"hello through the tunnel".to_vec()]);
}

#[test]
fn truncated_replayed_and_foreign_datagrams_are_dropped() {
    let (mut a, mut b) = pair();
    let d = one_datagram(&mut a);
    for n in 0..d.len() {
        let mut t = d[..n].to_vec();
        assert_eq!(
            b.input(&mut t, 0, &mut |_p: &[u8]| panic!("truncated delivered")),
            Received::Dropped
        );
    }
    let mut first = d.clone();
    let mut count = 0;
    b.input(&mut first, 0, &mut |_p: &[u8]| count += 1);
    let mut again = d.clone();
    assert_eq!(
        b.input(&mut again, 0, &mut |_p: &[u8]| count += 1),
        Received::Dropped
    );
    assert_eq!(count, 1);
    assert_eq!(b.stats.replays, 1);

    // A session keyed differently (another secret) can't speak to B.
    let cfg = config("fast", Some((10, 3)), false);
    let mut stranger = Session::new(cfg, 7, &[0x33; 32], &[0x44; 32], 2, 0).unwrap();
    let mut f = one_datagram(&mut stranger);
    assert_eq!(
        b.input(&mut f, 0, &mut |_p: &[u8]| panic!("foreign delivered")),
        Received::Dropped
    );
    assert!(b.stats.auth_failures >= 1);
}

#[test]
fn keepalive_and_idle_timeout() {
    let mut cfg = config("fast", None, false);
    cfg.keepalive_ms = 1000;
    cfg.idle_timeout_ms = 3500;
    let mut a = Session::new(cfg.clone(), 7, &KEY_AB, &KEY_BA, 2, 0).unwrap();
    let mut b = Session::new(cfg, 7, &KEY_BA, &KEY_AB, 1, 0).unwrap();
    // A keeps talking (keepalives), B hears it and stays up; A hears nothing and times out.
    let mut now = 0;
    while now < 5000 {
        let mut tx = VecTransmit::default();
        a.poll(now, &mut tx);
        for mut d in tx.datagrams {
            assert_eq!(
                b.input(&mut d, now, &mut |_p: &[u8]| {}),
                Received::Keepalive
            );
        }
        let mut sink = VecTransmit::default();
        b.poll(now, &mut sink);
        now += 50;
    }
    assert!(
        b.stats.keepalives_in >= 3,
        "B heard {} keepalives",
        b.stats.keepalives_in
    );
    assert_eq!(b.stats.keepalives_in, a.stats.keepalives_out);
    assert!(a.closed().is_some(), "A should have timed out");
    assert!(b.closed().is_none(), "B heard keepalives and must stay up");
}
